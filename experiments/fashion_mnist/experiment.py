"""Fashion-MNIST with a convolutional SNN: the zoo's ``snn-conv-classifier`` trained on the full 60,000 / 10,000 set.

Each image is shown for ``steps`` time steps as a constant input current (direct encoding); the logits are the
readout averaged over the steps, trained with cross-entropy by surrogate-gradient BPTT through ``scan`` (the
convolutions see all steps at once, the LIB layers run their fused sequence kernels). AdamW, linear warm-up then
cosine decay, random crops (pad 2) and horizontal flips. Test accuracy is on the official 10,000 test images with
fresh hidden states per image, exactly what ``SpikingConvClassifier.classify`` does.

Parts: one per ``[models.<part>]`` (each trains every seed of ``seeds``); ``publish`` turns the main part's first
seed into the zoo entry named in ``[publish]``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import tracetorch_zoo as zoo
from ttexp import Trainer, digit_images
from ttexp.results import provenance_line, save_figure, seed_summary, table_header, write_json, write_weights
from ttexp.schedule import lr_at

# Published conv SNNs on Fashion-MNIST (test accuracy), each read in its authors' own code or docs (the papers'
# tables were not reachable here); ours is the test accuracy after the last epoch, never selected on the test set.
PUBLISHED = [
    {
        "model": "PLIF SNN (Fang et al. 2021, ICCV): 2 x [conv 128, BN, PLIF, maxpool], FC 2048, FC 100, voting; "
        "T = 8, direct input, ATan surrogate, BPTT",
        "test_acc": 0.9385,
        "where": "authors' code, github fangwei123456/Parametric-Leaky-Integrate-and-Fire-Spiking-Neuron README "
        "(commit f644ff65), 'Accuracy': accuracy-B (test accuracy at the best validation accuracy); accuracy-A, "
        "the maximum test accuracy over training, is 94.38 %",
    },
    {
        "model": "SpikingJelly's conv SNN tutorial: 2 x [conv 128, BN, IF, maxpool], FC 2048, FC 10; T = 4, "
        "direct input, ATan surrogate, BPTT, 64 epochs",
        "test_acc": 0.9308,
        "where": "github fangwei123456/spikingjelly, docs/source/tutorials/en/conv_fashion_mnist.rst: "
        "'max_test_acc = 0.9308' (the maximum test accuracy over training)",
    },
    {
        "model": "TSSL-BP (Zhang & Li 2020, NeurIPS): 32C5-P2-64C5-P2-1024 LIF, T = 5, 100 epochs",
        "test_acc": 0.9269,
        "where": "authors' code, github stonezwr/TSSL-BP README, 'Results / Fashion MNIST' (mean of runs; "
        "best 92.83 %)",
    },
]


# ------------------------------------------------------------------------------------------------- data
def load_data(ctx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(train_x [N, 1, H, W] in [0, 1], train_y, test_x, test_y, info)`` with the training pixels' mean/std."""
    train_x, train_y, test_x, test_y, info = digit_images.load_images(ctx.config["data"], ctx.root)
    info["pixel_mean"] = float(train_x.mean())
    info["pixel_std"] = float(train_x.std())
    return train_x, train_y, test_x, test_y, info


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random ``H x W`` crops of ``x`` ``[B, C, H, W]`` zero-padded by ``pad``, then flips with p = 0.5 (seeded)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)  # [B, C, H, W + 2 pad]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


# ------------------------------------------------------------------------------------------------- model
def build_model(ctx, part: str, info: dict[str, Any], seed: int) -> zoo.vision.SpikingConvClassifier:
    """The part's classifier for the data's image shape, standardised by the training pixels' statistics."""
    torch.manual_seed(seed)
    mc = ctx.config["models"][part]
    args = {"image_shape": info["image_shape"], **mc["init_args"]}
    args.update(mean=round(info["pixel_mean"], 6), std=round(info["pixel_std"], 6))
    return zoo.build({"architecture": mc["architecture"], "init_args": args})


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 500) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``classify`` (fresh states per chunk of images) in eval mode."""
    was = model.training
    model.eval()
    hits, loss = 0, 0.0
    for i in range(0, len(y), chunk):
        logits = model.classify(x[i : i + chunk])
        hits += (logits.argmax(-1) == y[i : i + chunk]).sum().item()
        loss += F.cross_entropy(logits, y[i : i + chunk], reduction="sum").item()
    model.zero_states()
    model.train(was)
    return {"test_acc": hits / len(y), "test_loss": loss / len(y)}


def confusion(model, x: torch.Tensor, y: torch.Tensor, classes: int, chunk: int = 500) -> list[list[int]]:
    """``counts[true][predicted]`` on ``(x, y)``."""
    counts = torch.zeros(classes, classes, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(y), chunk):
            pred = model.classify(x[i : i + chunk]).argmax(-1)
            counts.index_put_((y[i : i + chunk], pred), torch.ones_like(pred), accumulate=True)
    model.zero_states()
    return counts.tolist()


# ---------------------------------------------------------------------------------------------- training
def train_seed(ctx, part: str, seed: int, data: tuple) -> dict[str, Any]:
    """Train one (part, seed), resuming from its checkpoints; returns its result (cached in the run dir)."""
    tc = ctx.config["train"]
    done_file = ctx.run_dir / part / f"seed{seed}.json"
    weights = ctx.run_dir / part / f"seed{seed}.safetensors"
    if done_file.is_file() and weights.is_file():
        return json.loads(done_file.read_text())
    train_x, train_y, test_x, test_y, info = data
    model = build_model(ctx, part, info, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    batch = min(tc["batch"], len(train_y))
    per_epoch = len(train_y) // batch
    total = tc["epochs"] * per_epoch
    trainer = Trainer(ctx, f"{part}/seed{seed}", model, opt, total_steps=total, checkpoint_every=tc["checkpoint_every"])
    trainer.resume()
    trainer.extra.setdefault("runs", []).append({"start_step": trainer.start, **ctx.provenance()})
    running: list[float] = []
    hits = seen = 0
    for step in trainer.steps():
        epoch, k = divmod(step, per_epoch)  # the data position is a function of the step (resumable)
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        idx = perm[k * batch : (k + 1) * batch]
        x = train_x[idx]
        if tc["augment"]:
            x = augment(x, torch.Generator().manual_seed(seed * 10**7 + step))
        lr = lr_at(step, tc, total)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model.classify(x)  # fresh states, `steps` steps, averaged logits
        loss = F.cross_entropy(logits, train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.zero_states()
        running.append(loss.item())
        hits += (logits.argmax(-1) == train_y[idx]).sum().item()
        seen += len(idx)
        if k == per_epoch - 1:  # end of an epoch: train loss/accuracy and the test metrics
            row = {"epoch": epoch + 1, "train_loss": sum(running) / len(running), "train_acc": hits / seen, "lr": lr}
            running.clear()
            hits = seen = 0
            if (epoch + 1) % tc["eval_every_epochs"] == 0 or step + 1 == total:
                row.update(evaluate(model, test_x, test_y))
            trainer.log(step, **row)
    if not trainer.done:
        return {}
    t0 = time.perf_counter()
    final = evaluate(model, test_x, test_y)
    wall = trainer.extra["wall_seconds"]
    result = {
        **final,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "steps": total,
        "epochs": tc["epochs"],
        "wall_seconds": wall,
        "seconds_per_step": wall / total,
        "eval_seconds": time.perf_counter() - t0,
        "confusion": confusion(model, test_x, test_y, ctx.config["models"][part]["init_args"]["classes"]),
        "stream_check_max_abs": stream_check(model, test_x[:8]),
        "history": trainer.history,
        "runs": trainer.extra["runs"],
    }
    write_weights(model, weights)
    write_json(done_file, result)  # written last: "done" means the weights are complete
    print(f"fashion_mnist {part} seed {seed}: test accuracy {final['test_acc']:.4f} ({wall / 60:.1f} min)", flush=True)
    return result


@torch.no_grad()
def stream_check(model, images: torch.Tensor) -> float:
    """max |logit difference| between ``classify`` (scan) and stepping the images one step at a time."""
    model.eval()
    want = model.classify(images)
    model.zero_states()
    got = torch.stack([model(images) for _ in range(model.steps)]).mean(0)
    model.zero_states()
    return float((got - want).abs().max())


# ---------------------------------------------------------------------------------------------- ttexp API
def parts(ctx) -> list[str]:
    """One part per ``[models.<part>]`` table (each trains all seeds)."""
    return list(ctx.config["models"])


def run(ctx) -> dict[str, Any] | None:
    """Train every wanted part; return the results once all parts are done (``None`` until then)."""
    names = parts(ctx)
    data = load_data(ctx)
    results: dict[str, Any] = {}
    for part in names:
        if ctx.wants(part):
            runs = [train_seed(ctx, part, s, data) for s in ctx.config["seeds"]]
        else:
            runs = [json.loads(f.read_text()) for s in ctx.config["seeds"]
                    if (f := ctx.run_dir / part / f"seed{s}.json").is_file()]  # fmt: skip
        if len(runs) == len(ctx.config["seeds"]) and all(runs):
            results[part] = {
                "architecture": ctx.config["models"][part]["architecture"],
                "num_parameters": runs[0]["num_parameters"],
                "test_acc": seed_summary(runs, "test_acc"),
                "stream_check_max_abs": max(r["stream_check_max_abs"] for r in runs),
                "wall_seconds": sum(r["wall_seconds"] for r in runs),
                "seconds_per_step": sum(r["seconds_per_step"] for r in runs) / len(runs),
                "runs": runs,
            }
    missing = [p for p in names if p not in results]
    if missing:
        print(f"fashion_mnist: parts not finished yet: {missing}; results are written once all are done")
        return None
    return {"data": data[4], "published": PUBLISHED, "models": results, "main": ctx.config["main"]}


# ---------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    """Markdown results (generated from results.json; do not edit by hand)."""
    cfg, d, prov = results["config"], results["data"], results["provenance"]
    tc = cfg["train"]
    lines = [
        *table_header(results, "fashion_mnist"),
        f"**Data: `{d['source']}`** - {d['name']}; {d['train_images']:,} train / {d['test_images']:,} test images "
        f"of shape {d['image_shape']} ({d['split']}).",
        "",
        f"Training: AdamW lr {tc['lr']} (warm-up {tc['warmup']} steps, cosine to x{tc['min_lr_ratio']}), weight decay "
        f"{tc['weight_decay']}, batch {tc['batch']}, {tc['epochs']} epochs"
        + (", random crops (pad 2) and horizontal flips" if tc["augment"] else "")
        + f"; seeds {cfg['seeds']}. Test accuracy: `classify` on the {d['test_images']:,} test images, fresh "
        "hidden states per image, logits averaged over the steps.",
        "",
        "| model | parameters | time steps | test accuracy | s/step | train time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for part, r in results["models"].items():
        acc = r["test_acc"]
        spread = f" +- {acc['std']:.4f}" if len(acc["seeds"]) > 1 else ""
        steps = cfg["models"][part]["init_args"]["steps"]
        star = " (published)" if part == results["main"] else ""
        lines.append(
            f"| {part}: `{r['architecture']}`{star} | {r['num_parameters']:,} | {steps} | **{acc['mean']:.4f}**"
            f"{spread} | {r['seconds_per_step']:.3f} | {r['wall_seconds'] / 60:.1f} min |"
        )
    if d["source"] == "fashion-mnist":
        note = (
            "Published conv SNNs on the same test set (each read in its authors' own code or docs; see the CHANGELOG):"
        )
        lines += ["", note, "", "| model | test accuracy | where |", "|---|---:|---|"]
        lines += [f"| {p['model']} | {p['test_acc']:.4f} | {p['where']} |" for p in results["published"]]
    lines += [
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``curves.png`` (train loss, train and test accuracy per epoch) and ``confusion.png`` (main part, seed 0)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (part, r) in enumerate(results["models"].items()):
        for j, run_ in enumerate(r["runs"]):
            h = run_["history"]
            label = part if j == 0 else None
            a1.plot([row["epoch"] for row in h], [row["train_loss"] for row in h], color=f"C{i}", label=label)
            a2.plot([row["epoch"] for row in h], [row["train_acc"] for row in h], ":", color=f"C{i}",
                    label=f"{part} train" if j == 0 else None)  # fmt: skip
            ev = [row for row in h if "test_acc" in row]
            a2.plot([row["epoch"] for row in ev], [row["test_acc"] for row in ev], "o-", ms=3, color=f"C{i}",
                    label=f"{part} test" if j == 0 else None)  # fmt: skip
    for p in results.get("published", []) if results["data"]["source"] == "fashion-mnist" else []:
        a2.axhline(p["test_acc"], color="gray", ls="--", lw=0.8)
        a2.text(1, p["test_acc"], " " + p["model"].split(",")[0], va="bottom", fontsize=7, color="gray")
    a1.set(xlabel="epoch", ylabel="train cross-entropy")
    a2.set(xlabel="epoch", ylabel="accuracy")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="best")
    fig.suptitle(f"fashion_mnist {results['version']} on {results['data']['source']}")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")
    r = results["models"][results["main"]]
    conf = np.array(r["runs"][0]["confusion"], dtype=float)
    conf /= np.maximum(conf.sum(1, keepdims=True), 1)
    names = results["data"].get("classes") or [str(i) for i in range(len(conf))]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(conf, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=f"{results['main']}: test accuracy {r['test_acc']['mean']:.4f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, out / "confusion.png")


# ---------------------------------------------------------------------------------------------- publishing
def publish(ctx, *, endpoint=None, local_hub=None, repo_id=None, registry_dir=None) -> Path:
    """Publish seed ``seeds[0]`` of the main part as the entry in ``[publish]`` (see ``tracetorch_zoo.publish``).

    Snapshot ``blank``: the hidden states after the network has looked at an all-black image for ``steps``
    steps (batch 1), the resting state a stream of images continues from. Golden tensors: the first
    ``golden_images`` test images, each shown for ``steps`` steps."""
    from safetensors.torch import load_file

    from ttexp.publishing import finished_results, publish_entry

    pc, cfg = ctx.config["publish"], ctx.config
    results = finished_results(ctx)
    part, seed = results["main"], cfg["seeds"][0]
    _, _, test_x, _, info = load_data(ctx)
    model = build_model(ctx, part, info, seed)
    model.load_state_dict(load_file(str(ctx.run_dir / part / f"seed{seed}.safetensors")))
    model.eval()
    with torch.no_grad():
        model.classify(torch.zeros(1, *info["image_shape"]))
    snapshot = model.save_states()
    model.zero_states()
    blank = {
        "meaning": f"states after an all-black image shown for {model.steps} steps (batch 1): the resting state a "
        "stream of images continues from",
        "steps_consumed": str(model.steps),
    }
    golden = test_x[: pc["golden_images"]].unsqueeze(0).expand(model.steps, -1, -1, -1, -1).contiguous()
    run = results["models"][part]["runs"][0]
    fashion = info["source"] == "fashion-mnist"
    dataset = {"id": info.get("dataset_id", info["source"]), "name": "Fashion-MNIST" if fashion else info["name"]}
    metrics = [{"name": "test accuracy", "type": "accuracy", "value": round(run["test_acc"], 4), "dataset": dataset,
                "split": "test", "task": "image-classification"}]  # fmt: skip
    comparisons = [
        {"name": p["model"], "type": "accuracy", "value": p["test_acc"], "dataset": dataset, "split": "test",
         "source": p["where"]}
        for p in (results["published"] if fashion else [])
    ]  # fmt: skip
    classes = info.get("classes") or [str(i) for i in range(10)]
    usage = "\n".join([
        "import torch",
        "import tracetorch_zoo as zoo",
        "",
        f'model = zoo.load("{pc["name"]}")  # embedded in tracetorch-zoo: works offline',
        f"images = torch.rand(8, {', '.join(map(str, info['image_shape']))})  # [B, C, H, W] in [0, 1], white on black",
        "probs = model.classify(images).softmax(-1)  # fresh states, 4 steps per image, averaged logits",
        f"labels = {classes!r}",
        "print([labels[i] for i in probs.argmax(-1).tolist()])",
    ])  # fmt: skip
    metadata = {
        "name": pc["name"],
        "experiment": ctx.name,
        "version": ctx.version,
        "dataset": dataset["name"],
        "task": "image-classification",
        "license": "mit",
        "data_license": "Fashion-MNIST, MIT (Zalando Research, Xiao, Rasul & Vollgraf 2017)"
        if fashion
        else info["name"],
        "metrics": metrics,
        "comparisons": comparisons,
        "git_sha": results["provenance"]["git"]["sha"],
        "classes": classes,
        "usage": usage,
        "description": (
            f"A convolutional spiking neural network ({run['num_parameters']:,} parameters; two conv-BatchNorm-LIB-"
            f"maxpool stages, a spiking fully connected layer and a linear readout) trained by experiment {ctx.name} "
            f"{ctx.version} with surrogate-gradient BPTT on {dataset['name']}. Each image is shown for {model.steps} "
            "time steps as a constant input current; the class logits are the readout averaged over the steps."
        ),
        "intended_use": "Classifying 28x28 grey-scale images of clothing (Fashion-MNIST's ten classes, white object "
        "on black), and as a small, inspectable example of a trained convolutional SNN (spike counts, membranes, "
        "hidden-state snapshots).",
        "limitations": "Trained on Fashion-MNIST only: photographs, other sizes, inverted or off-centre images are "
        "out of distribution. BatchNorm runs with its training statistics (eval mode).",
    }
    return publish_entry(
        ctx, model, results, run | {"history": run["history"][-3:]}, pc=pc,
        snapshot=("blank", snapshot, blank), golden_inputs=golden, metadata=metadata,
        license=metadata["data_license"] + "; weights MIT",
        endpoint=endpoint, local_hub=local_hub, repo_id=repo_id, registry_dir=registry_dir,
    )  # fmt: skip
