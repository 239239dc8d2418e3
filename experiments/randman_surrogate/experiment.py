"""Randman surrogate-gradient sweep: robust to the surrogate's shape, sensitive to its scale (Zenke & Vogels 2021).

Data: Randman (Zenke & Vogels 2021; generator re-implemented here from the description of the authors' MIT code,
github.com/fzenke/randman, in /work/shared/PAPERS.md section 3). Each class ``c`` has its own random smooth map
``f_c: [0, 1]^D -> R^M``; coordinate ``i`` is a product over the D axes of a random Fourier series

    f_i(x) = prod_d sum_{k=0}^{F-1} A_idk s_k sin(2 pi (k x_d B_idk + C_idk)),   A, B, C ~ U(0, 1), A_id0 = 0,

with the code's default spectrum ``s_k = 1 / ((k + 1)^alpha + 1)`` (not the paper's printed ``k^-alpha``) and
``F = min(ceil(prec^(-1/alpha)), 1000)``. A sample of class ``c``: draw ``x ~ U(0, 1)^D``, evaluate ``f_c(x)``,
min-max standardise every unit over that class's samples to [0, 1), and use the value as the single spike time
of that input unit, ``floor(value * steps * step_frac)``: every input spikes exactly once, so only timing carries
the class. One data set per seed (manifolds, samples and split all drawn from ``torch.Generator(seed)``).

Network (feedforward, the paper's setting): ``Linear(M, H, no bias) -> SLIB(H) -> Linear(H, C, no bias) -> LI(C)``.
``SLIB`` is a current-based LIF neuron (``syn <- a syn + (1 - a) x``, ``mem <- beta mem + syn``, spike
``H(mem - 1)``, subtractive reset, reset not differentiated), decays fixed to ``exp(-1 / tau)``; the readout
``LI`` integrates ``mem <- b mem + x``. Logits are the readout's maximum over time, loss cross-entropy plus the
lower-bound L2 activity regulariser ``lambda * mean_j relu(theta - rate_j)^2`` (rate_j: spikes per step of hidden
neuron j over the batch). BPTT through ``scan`` of each layer, Adam.

Surrogates (the hidden layer's spike function ``tracetorch.functional.spike.SpikeFunction("heaviside", shape,
slope=beta)``; the forward is always the Heaviside step), with ``v = mem - threshold``:

* ``fast_sigmoid`` (SuperSpike): ``1 / (1 + beta |v|)^2``, peak 1;
* ``sigmoid`` (derivative of the sigmoid): ``beta s (1 - s)``, ``s = sigmoid(beta v)``, peak ``beta / 4``;
* ``triangle`` (Esser et al. piecewise linear): ``max(0, 1 - beta |v|)``, peak 1.

``beta`` is the steepness (1 / width) of every shape, swept over a log grid. The sigmoid's peak is not 1: with a
single hidden layer, the reset not differentiated and Adam, a constant factor on the surrogate multiplies only the
first layer's gradient, which Adam's per-parameter normalisation removes (up to its epsilon), so the comparison of
shapes at equal ``beta`` is the same as with every shape normalised to peak 1.

Parts: one per shape (the ``beta`` x seed grid, one process each) and ``stork``: the setting of the Zenke lab's
stork example notebook (128 hidden, tau_mem 20 ms / tau_syn 10 ms at 2 ms steps, SuperSpike beta 20), shown beside
its stored output 96.3 %. Finished cells are cached in the run folder, so a re-run resumes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tracetorch as tt
from tracetorch import snn
from tracetorch.functional.spike import SpikeFunction
from ttexp.results import provenance_line, save_figure, table_header, write_json

SHAPES = ("fast_sigmoid", "sigmoid", "triangle")
SHAPE_LABELS = {
    "fast_sigmoid": "SuperSpike 1/(1+b abs(v))^2",
    "sigmoid": "sigmoid' b s(1-s)",
    "triangle": "piecewise linear max(0, 1-b abs(v))",
}
STORK_ANCHOR = 0.963  # fmi-basel/stork examples/01_Shallow_SNN_Randman.ipynb (commit 258a2d6), stored output


# ---------------------------------------------------------------------------------------------------- data
def randman_frequencies(alpha: float, prec: float, max_freq: int) -> int:
    """Number of Fourier terms F = min(ceil(prec^(-1/alpha)), max_freq) (1000 at alpha = 1, prec = 1e-3)."""
    return int(min(math.ceil(prec ** (-1.0 / alpha)), max_freq))


def randman_manifold(x: Tensor, units: int, alpha: float, n_freq: int, gen: torch.Generator) -> Tensor:
    """One class's manifold f evaluated at ``x`` [N, D] -> [N, units] (float64; draws A, B, C from ``gen``)."""
    n, dim = x.shape
    a = torch.rand(units, dim, n_freq, generator=gen, dtype=torch.float64)
    b = torch.rand(units, dim, n_freq, generator=gen, dtype=torch.float64)
    c = torch.rand(units, dim, n_freq, generator=gen, dtype=torch.float64)
    a[..., 0] = 0.0  # use_bias=False: no constant term
    k = torch.arange(n_freq, dtype=torch.float64)
    spectrum = 1.0 / ((k + 1) ** alpha + 1)  # the code's default, s_k = 1 / ((k + 1)^alpha + 1)
    out = torch.ones(n, units, dtype=torch.float64)
    for d in range(dim):
        for i in range(units):  # [N, F] per unit keeps memory at N * F
            phase = 2 * math.pi * (x[:, d, None] * (k * b[i, d]) + c[i, d])
            out[:, i] *= (torch.sin(phase) * (a[i, d] * spectrum)).sum(-1)
    return out


def make_randman(data: dict[str, Any], seed: int) -> dict[str, Any]:
    """The spiking Randman data set: spike times [N, M] (int64), labels [N], split into train/valid/test.

    Returns ``{"train": (times, labels), "valid": ..., "test": ..., "n_freq": F}``; samples are shuffled across
    classes before splitting by the sizes in ``data["split"]`` (per class, summed over classes).
    """
    gen = torch.Generator().manual_seed(int(seed))
    n_freq = randman_frequencies(data["alpha"], data["prec"], data["max_freq"])
    per = data["samples_per_class"]
    times, labels = [], []
    for cls in range(data["classes"]):
        x = torch.rand(per, data["dim"], generator=gen, dtype=torch.float64)
        y = randman_manifold(x, data["units"], data["alpha"], n_freq, gen)
        lo, hi = y.min(0).values, y.max(0).values
        z = (y - lo) / (hi - lo) * (1 - 1e-9)  # per unit over the class's samples, to [0, 1)
        times.append(torch.floor(z * data["steps"] * data["step_frac"]).long())
        labels.append(torch.full((per,), cls, dtype=torch.long))
    times_all, labels_all = torch.cat(times), torch.cat(labels)
    order = torch.randperm(len(labels_all), generator=gen)
    times_all, labels_all = times_all[order], labels_all[order]
    n_train, n_valid, n_test = (s * data["classes"] for s in data["split"])
    cut = [0, n_train, n_train + n_valid, n_train + n_valid + n_test]
    out = {name: (times_all[cut[j] : cut[j + 1]], labels_all[cut[j] : cut[j + 1]]) for j, name in
           enumerate(("train", "valid", "test"))}  # fmt: skip
    out["n_freq"] = n_freq
    return out


def spike_raster(times: Tensor, steps: int) -> Tensor:
    """Spike times [B, M] -> a time-first raster [steps, B, M] with one 1.0 per (sample, unit)."""
    b, m = times.shape
    x = torch.zeros(steps, b, m)
    x.scatter_(0, times.unsqueeze(0), 1.0)  # x[times[b, i], b, i] = 1
    return x


# --------------------------------------------------------------------------------------------------- model
def build_model(cfg: dict[str, Any], mc: dict[str, Any], shape: str, beta: float, seed: int) -> tt.Model:
    """``Linear -> SLIB -> Linear -> LI`` with fixed decays; weights ~ N(0, scale^2 / fan_in)."""
    torch.manual_seed(seed)
    d = cfg["data"]
    lin1 = nn.Linear(d["units"], mc["hidden"], bias=False)
    lin2 = nn.Linear(mc["hidden"], d["classes"], bias=False)
    nn.init.normal_(lin1.weight, 0.0, mc["w1_scale"] / math.sqrt(d["units"]))
    nn.init.normal_(lin2.weight, 0.0, mc["w2_scale"] / math.sqrt(mc["hidden"]))
    hidden = snn.SLIB(
        mc["hidden"], math.exp(-1 / mc["tau_syn"]), math.exp(-1 / mc["tau_mem"]), mc["threshold"], 0.0,
        learn_alpha=False, learn_beta=False, learn_threshold=False, learn_bias=False,
        spike_fn=SpikeFunction("heaviside", shape, beta), detach_reset=mc["detach_reset"],
    )  # fmt: skip
    readout = snn.LI(d["classes"], math.exp(-1 / mc["tau_out"]), learn_beta=False)
    return tt.Model(lin1, hidden, lin2, readout)


def forward(model: tt.Model, x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` [T, B, M] -> (logits [B, C] = max over time of the readout, hidden spikes [T, B, H])."""
    lin1, hidden, lin2, readout = model
    tt.zero_states(model)
    spikes = hidden.scan(lin1(x))
    return readout.scan(lin2(spikes)).amax(0), spikes


@torch.no_grad()
def evaluate(model: tt.Model, split: tuple[Tensor, Tensor], steps: int, chunk: int = 500) -> dict[str, float]:
    """Accuracy, loss and mean hidden rate (spikes per neuron per step) on a split."""
    times, labels = split
    hits, loss, rate = 0, 0.0, 0.0
    for i in range(0, len(labels), chunk):
        logits, spikes = forward(model, spike_raster(times[i : i + chunk], steps))
        y = labels[i : i + chunk]
        hits += (logits.argmax(-1) == y).sum().item()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        rate += spikes.mean((0, 2)).sum().item()
    tt.zero_states(model)
    n = len(labels)
    return {"accuracy": hits / n, "loss": loss / n, "rate": rate / n}


def train_cell(cfg: dict[str, Any], mc: dict[str, Any], shape: str, beta: float, seed: int,
               data: dict[str, Any], max_steps: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one (shape, beta, seed) network; the test accuracy after the last epoch and at the best valid epoch."""
    tc, steps = cfg["train"], cfg["data"]["steps"]
    model = build_model(cfg, mc, shape, beta, seed)
    opt = torch.optim.Adam(model.parameters(), lr=tc["lr"], betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(10_000 + seed)
    times, labels = data["train"]
    n, batch = len(labels), tc["batch"]
    curve, best, done = [], {"valid": -1.0}, 0
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(mc["epochs"]):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n - batch + 1, batch):  # drop the last partial batch
            idx = order[i : i + batch]
            logits, spikes = forward(model, spike_raster(times[idx], steps))
            rate = spikes.mean((0, 1))  # per hidden neuron, spikes per step
            reg = tc["reg_lower_strength"] * F.relu(tc["reg_lower_threshold"] - rate).pow(2).mean()
            loss = F.cross_entropy(logits, labels[idx]) + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            done += 1
            if max_steps is not None and done >= max_steps:
                break
        valid = evaluate(model, data["valid"], steps)
        curve.append({"epoch": epoch + 1, "train_loss": total / max(1, n // batch), "valid_acc": valid["accuracy"]})
        if valid["accuracy"] > best["valid"]:
            best = {"valid": valid["accuracy"], "epoch": epoch + 1, "test": evaluate(model, data["test"], steps)}
        if max_steps is not None and done >= max_steps:
            break
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    test = evaluate(model, data["test"], steps)
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "hidden_rate": test["rate"],
        "best_valid_accuracy": best["valid"],
        "best_epoch": best["epoch"],
        "test_accuracy_at_best_valid": best["test"]["accuracy"],
        "train_seconds": seconds,
        "cpu_seconds": cpu,
        "steps": done,
        "seconds_per_step": seconds / max(1, done),
        "cpu_seconds_per_step": cpu / max(1, done),
        "curve": curve,
    }


# -------------------------------------------------------------------------------------------------- parts
def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [c["test_accuracy"] for c in cells]
    mean = sum(accs) / len(accs)
    sd = (sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
    return {
        "mean": mean,
        "std": sd,
        "seeds": accs,
        "best_valid_test": [c["test_accuracy_at_best_valid"] for c in cells],
        "hidden_rate": [c["hidden_rate"] for c in cells],
        "train_seconds": sum(c["train_seconds"] for c in cells),
        "cpu_seconds": sum(c["cpu_seconds"] for c in cells),
        "seconds_per_step": sum(c["seconds_per_step"] for c in cells) / len(cells),
        "curves": [[r["valid_acc"] for r in c["curve"]] for c in cells],
    }


def run_grid(ctx, part: str, mc: dict[str, Any], shape: str, betas: list[float]) -> dict[str, Any]:
    """Train every (beta, seed) cell of one part, caching each finished cell as JSON in the run folder."""
    cfg = ctx.config.data
    max_steps = ctx.options.get("max_steps")
    cache: dict[int, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    seeds = cfg["seeds"]
    if max_steps is not None:  # a timing probe: the first cell only, capped, never cached
        betas, seeds = betas[:1], seeds[:1]
    for beta in betas:
        cells = []
        for seed in seeds:
            path = ctx.run_dir / part / f"beta{beta:g}-seed{seed}.json"
            if path.is_file() and max_steps is None:
                cell = json.loads(path.read_text())
            else:
                if seed not in cache:
                    cache[seed] = make_randman(cfg["data"], seed)
                cell = train_cell(cfg, mc, shape, float(beta), seed, cache[seed], max_steps)
                if max_steps is None:  # a capped probe is never cached as a finished cell
                    write_json(path, cell)
                print(
                    f"randman_surrogate {part} beta={beta:g} seed={seed}: test {cell['test_accuracy']:.3f} "
                    f"rate {cell['hidden_rate']:.4f} ({cell['train_seconds']:.1f} s, "
                    f"{cell['seconds_per_step'] * 1e3:.1f} ms/step wall, {cell['cpu_seconds_per_step'] * 1e3:.1f} CPU)",
                    flush=True,
                )
            cells.append(cell)
        out[f"{beta:g}"] = summarise(cells)
    return out


def parts(ctx) -> list[str]:
    """One part per surrogate shape, plus ``stork`` (the stork notebook's setting)."""
    return [*ctx.config["sweep"]["shapes"], "stork"]


def run(ctx) -> dict[str, Any] | None:
    """Run every wanted part; return the results once all parts are done (``None`` until then)."""
    cfg = ctx.config.data
    names = parts(ctx)
    bad = set(cfg["sweep"]["shapes"]) - set(SHAPES)
    if bad:
        raise SystemExit(f"randman_surrogate: unknown shape(s) {sorted(bad)}; shapes: {SHAPES}")
    results: dict[str, Any] = {}
    for part in names:
        done = ctx.run_dir / part / "result.json"
        if done.is_file():
            results[part] = json.loads(done.read_text())
        elif ctx.wants(part):
            if part == "stork":
                st = cfg["stork"]
                results[part] = run_grid(ctx, part, {**cfg["model"], **st["model"]}, st["shape"], [st["beta"]])
            else:
                results[part] = run_grid(ctx, part, cfg["model"], part, cfg["sweep"]["betas"])
            if ctx.options.get("max_steps") is None:
                write_json(done, results[part])
    missing = [p for p in names if p not in results]
    if missing or ctx.options.get("max_steps") is not None:
        print(f"randman_surrogate: parts not finished yet: {missing}; results are written once all are done")
        return None
    shapes = cfg["sweep"]["shapes"]
    grid = {s: results[s] for s in shapes}
    betas = [f"{b:g}" for b in cfg["sweep"]["betas"]]
    # shape robustness: spread across shapes at each beta; scale sensitivity: spread across beta per shape
    across_shapes = {b: max(grid[s][b]["mean"] for s in shapes) - min(grid[s][b]["mean"] for s in shapes)
                     for b in betas}  # fmt: skip
    across_betas = {s: max(grid[s][b]["mean"] for b in betas) - min(grid[s][b]["mean"] for b in betas)
                    for s in shapes}  # fmt: skip
    best = {s: max(betas, key=lambda b, s=s: grid[s][b]["mean"]) for s in shapes}
    best_acc = {s: grid[s][best[s]]["mean"] for s in shapes}
    stork = results["stork"][f"{cfg['stork']['beta']:g}"]
    d = make_randman(cfg["data"], cfg["seeds"][0])
    return {
        "accuracy": grid,
        "summary": {
            "best_beta": best,
            "best_accuracy": best_acc,
            "best_accuracy_spread_across_shapes": max(best_acc.values()) - min(best_acc.values()),
            "max_spread_across_shapes": max(across_shapes.values()),
            "median_spread_across_shapes": sorted(across_shapes.values())[len(betas) // 2],
            "spread_across_shapes": across_shapes,
            "spread_across_betas": across_betas,
            "min_spread_across_betas": min(across_betas.values()),
        },
        "stork": {"ours": stork, "anchor": STORK_ANCHOR},
        "data_info": {
            "n_freq": d["n_freq"],
            "train": len(d["train"][1]),
            "valid": len(d["valid"][1]),
            "test": len(d["test"][1]),
            "max_spike_step": int(d["train"][0].max()),
        },
        "chance": 1.0 / cfg["data"]["classes"],
    }


# ---------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    """Markdown results (generated from results.json; do not edit by hand)."""
    cfg = results["config"]
    prov = results["provenance"]
    d, mc, tc, st = cfg["data"], cfg["model"], cfg["train"], cfg["stork"]
    shapes = cfg["sweep"]["shapes"]
    betas = [f"{b:g}" for b in cfg["sweep"]["betas"]]
    acc = results["accuracy"]
    summ = results["summary"]
    lines = [
        *table_header(results, "randman_surrogate"),
        "Zenke & Vogels (2021), Neural Computation 33(4), abstract (VERIFIED): learning is robust to the **shape** "
        "of the surrogate derivative, but its **scale** can substantially affect performance. The paper gives "
        "Fig. 3 as curves, not a table: its numbers are UNVERIFIED here and are not printed; ours are.",
        "",
        f"Data: Randman re-implemented from the authors' code description, {d['classes']} classes, M = {d['units']} "
        f"inputs, D = {d['dim']}, alpha = {d['alpha']:g}, spectrum s_k = 1/((k+1)^alpha + 1) (the code's default, "
        f"not the paper's printed k^-alpha), F = {results['data_info']['n_freq']} frequencies; one spike per input "
        f"in the first {d['step_frac'] * d['steps']:g} of {d['steps']} steps (1 ms); "
        f"{results['data_info']['train']}/{results['data_info']['valid']}/{results['data_info']['test']} "
        "train/valid/test, a new data set per seed (paper setting: SECONDARY).",
        f"Network: Linear({d['units']}, {mc['hidden']}) -> SLIB({mc['hidden']}, tau_syn {mc['tau_syn']:g}, tau_mem "
        f"{mc['tau_mem']:g} steps, reset not differentiated) -> Linear -> LI({d['classes']}, tau {mc['tau_out']:g}); "
        f"max over time + cross-entropy; lower-bound L2 rate regulariser ({tc['reg_lower_strength']:g}, "
        f"{tc['reg_lower_threshold']:g}); Adam lr {tc['lr']:g}, batch {tc['batch']}, {mc['epochs']} epochs.",
        "",
        f"Test accuracy after the last epoch, mean +- sd over seeds {cfg['seeds']} (chance "
        f"{results['chance']:.2f}); beta is the surrogate's steepness:",
        "",
        "| beta | " + " | ".join(SHAPE_LABELS[s] for s in shapes) + " | spread across shapes |",
        "|---:|" + "---:|" * (len(shapes) + 1),
    ]
    for b in betas:
        cells = " | ".join(f"{acc[s][b]['mean']:.3f} +- {acc[s][b]['std']:.3f}" for s in shapes)
        lines.append(f"| {b} | {cells} | {summ['spread_across_shapes'][b]:.3f} |")
    lines += [
        "| spread across beta | " + " | ".join(f"{summ['spread_across_betas'][s]:.3f}" for s in shapes) + " | |",
        "| best beta | "
        + " | ".join(f"{summ['best_beta'][s]} ({summ['best_accuracy'][s]:.3f})" for s in shapes)
        + " | "
        + f"{summ['best_accuracy_spread_across_shapes']:.3f} |",
        "",
        "Claim check: robust to the shape = small spread across shapes at a given beta (median "
        f"{summ['median_spread_across_shapes']:.3f}, max {summ['max_spread_across_shapes']:.3f}; best accuracies "
        f"differ by {summ['best_accuracy_spread_across_shapes']:.3f}); sensitive to the scale = large spread across "
        f"beta (smallest over shapes {summ['min_spread_across_betas']:.3f}).",
        "",
    ]
    so = results["stork"]["ours"]
    sm = {**mc, **st["model"]}
    mid = betas[len(betas) // 2]
    lines += [
        "Anchor (VERIFIED stored notebook output, not a number from the paper): fmi-basel/stork "
        "`examples/01_Shallow_SNN_Randman.ipynb` (commit 258a2d6): Randman 10 classes, 20 inputs, D = 1, alpha = 1, "
        "1000 samples/class, 100 steps of 2 ms, spikes in the first half; 128 hidden LIF, tau_mem 20 ms, tau_syn 10 "
        "ms, SuperSpike beta 20; SMORMS3 lr 5e-3, batch 250, 200 epochs, lower and upper L2 activity regularisers.",
        "",
        "| setting | test accuracy |",
        "|---|---:|",
        f"| stork notebook (their run) | {results['stork']['anchor']:.3f} |",
        f"| ours: same data in step units, SLIB({sm['hidden']}, tau_syn {sm['tau_syn']:g}, tau_mem {sm['tau_mem']:g}, "
        f"readout tau {sm['tau_out']:g} steps), {st['shape']} beta {st['beta']:g}, Adam lr {tc['lr']:g}, "
        f"{sm['epochs']} epochs | {so['mean']:.3f} +- {so['std']:.3f} |",
        "",
        f"Hidden rate (spikes per neuron per step, test, seed mean) at beta {mid}: "
        + ", ".join(f"{s} {sum(acc[s][mid]['hidden_rate']) / len(cfg['seeds']):.4f}" for s in shapes)
        + ". Train time: "
        + ", ".join(f"{s} {sum(acc[s][b]['train_seconds'] for b in betas) / 60:.1f} min" for s in shapes)
        + f", stork {so['train_seconds'] / 60:.1f} min (one thread each).",
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``accuracy_vs_beta.png``: test accuracy against beta per shape (log x), like the paper's Fig. 3."""
    import matplotlib.pyplot as plt

    cfg = results["config"]
    betas = cfg["sweep"]["betas"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in cfg["sweep"]["shapes"]:
        r = results["accuracy"][s]
        ax.errorbar(betas, [r[f"{b:g}"]["mean"] for b in betas], [r[f"{b:g}"]["std"] for b in betas],
                    marker="o", capsize=3, label=SHAPE_LABELS[s])  # fmt: skip
    ax.axhline(results["chance"], color="gray", lw=0.8, ls=":", label="chance")
    ax.axhline(results["stork"]["anchor"], color="k", lw=0.8, ls="--", label="stork notebook 96.3 % (other setup)")
    ax.set_xscale("log")
    ax.set_xlabel("surrogate steepness beta")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Randman, 1 hidden layer, mean +- sd over seeds")
    ax.legend(fontsize=7, loc="lower center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_beta.png")
