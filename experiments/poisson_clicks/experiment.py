"""Poisson clicks: which side clicked more? BPTT vs exact online learning vs trace learning vs REFLECT.

Task (after Brunton, Botvinick & Brody 2013): two Poisson click trains, left and right, over ``T`` steps; the
answer (the side with more clicks) is read from the network's output at the last step only. The expected
total number of clicks is fixed (``task.clicks``), so a longer ``T`` means sparser clicks and a longer memory,
not more evidence: the ideal click counter's accuracy is the same at every length. A click is an input of
``task.amplitude`` on its channel; the right-click share of an episode is drawn from U(``q_low``, ``q_high``);
ties go to the side with the higher rate.

Network (every method): ``Linear(2, H) -> LIB(H) -> Linear(H, 2) -> LI(2)``; the readout's decay is learnable
and starts at ``exp(-1 / (readout_tau * T))``, a time constant matched to the episode (the same for every
method). Methods, one loss (or reward) per episode at its last step:

* ``bptt``: ``model.scan`` over the episode, cross-entropy at the last step, backpropagation through time.
* ``online``: :class:`tt.online.OnlineLearner` (exact eligibility traces; memory independent of ``T``).
* ``trace``: :class:`tt.online.TraceLearner` (input traces with decay ``exp(-1 / (trace_tau * T))`` and a
  one-step rate window; memory independent of ``T``).
* ``reflect``: :class:`tt.online.RewardLearner` (``engine="trace"``): the reward 1 for a right answer, 0
  otherwise, no labels; the answer is sampled from the softmax of the output.

Parts: one per method (accuracy against ``T`` over seeds) and ``memory``: the peak resident memory of one
training episode of each method at each length in ``memory.lengths``, each (method, length) in a fresh
subprocess: the kernel's peak resident set size (``VmHWM``, what ``ru_maxrss`` reports), reset just before the
episode, minus the resident size at that moment (data, model and torch already loaded). tracemalloc does not
see torch's allocations, so it is not used. Finished cells are cached in the run folder, so a re-run resumes.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import tracetorch as tt
from tracetorch import snn
from ttexp.results import provenance_line, save_figure, table_header, write_json

METHODS = ("bptt", "online", "trace", "reflect")


# --------------------------------------------------------------------------------------------------- task
def make_batch(T: int, batch: int, task: dict[str, Any], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [T, B, 2], label [B])``: clicks (``amplitude`` or 0) on channels (left, right); label 1 = right."""
    q = task["q_low"] + (task["q_high"] - task["q_low"]) * torch.rand(batch, generator=gen)
    rate = task["clicks"] / T
    p = torch.stack([(1 - q) * rate, q * rate], -1).clamp(max=1.0)  # [B, 2]
    clicks = torch.bernoulli(p.expand(T, batch, 2), generator=gen)
    counts = clicks.sum(0)
    label = torch.where(counts[:, 1] == counts[:, 0], (q > 0.5).long(), (counts[:, 1] > counts[:, 0]).long())
    return clicks * task["amplitude"], label


def ideal_counter_accuracy(x: torch.Tensor, label: torch.Tensor) -> float:
    """Accuracy of counting the clicks exactly (a tie is a coin flip: half credit)."""
    counts = (x > 0).sum(0)
    right, left = counts[:, 1], counts[:, 0]
    score = torch.where(right == left, 0.5, ((right > left).long() == label).float())
    return score.mean().item()


def build_model(T: int, mc: dict[str, Any], seed: int) -> tt.Model:
    torch.manual_seed(seed)
    beta_out = math.exp(-1.0 / (mc["readout_tau"] * T))
    return tt.Model(
        nn.Linear(2, mc["hidden"]), snn.LIB(mc["hidden"], mc["hidden_beta"]), nn.Linear(mc["hidden"], 2),
        snn.LI(2, beta_out),
    )  # fmt: skip


@torch.no_grad()
def accuracy(model: tt.Model, x: torch.Tensor, label: torch.Tensor, chunk: int = 256) -> float:
    """Greedy accuracy of the answer at the last step (fresh states, in chunks of episodes)."""
    hits = 0
    for i in range(0, x.shape[1], chunk):
        tt.zero_states(model)
        y = model.scan(x[:, i : i + chunk])[-1]
        hits += (y.argmax(-1) == label[i : i + chunk]).sum().item()
    tt.zero_states(model)
    return hits / x.shape[1]


# --------------------------------------------------------------------------------------------- learning
class Method:
    """One training episode of a method (shared by the accuracy runs and the memory probes)."""

    def __init__(self, name: str, model: tt.Model, T: int, cfg: dict[str, Any], seed: int) -> None:
        mc = cfg["methods"][name]
        self.name, self.model = name, model
        self.opt = torch.optim.Adam(model.parameters(), lr=mc["lr"])
        decay = math.exp(-1.0 / (cfg["model"]["trace_tau"] * T))
        if name == "online":
            self.learner = tt.online.OnlineLearner(model, self.opt, F.cross_entropy)
        elif name == "trace":
            self.learner = tt.online.TraceLearner(model, self.opt, F.cross_entropy, in_trace_decay=decay)
        elif name == "reflect":
            self.learner = tt.online.RewardLearner(
                model, self.opt, engine="trace", decay=0.0, baseline_decay=mc["baseline_decay"],
                in_trace_decay=decay, seed=seed,
            )  # fmt: skip
        elif name != "bptt":
            raise SystemExit(f"poisson_clicks: unknown method {name!r}; methods: {METHODS}")

    def episode(self, x: torch.Tensor, label: torch.Tensor) -> float:
        """Train on one batch of episodes; returns the loss (``bptt``/``online``/``trace``) or the mean reward."""
        if self.name == "bptt":
            tt.zero_states(self.model)
            loss = F.cross_entropy(self.model.scan(x)[-1], label)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            return loss.item()
        learner = self.learner
        tt.zero_states(learner)
        # index the steps: ``for xt in x`` would unbind all T views at once (about 600 bytes each, 60 MB at 1e5 steps)
        if self.name == "reflect":
            for t in range(x.shape[0] - 1):
                learner.observe(x[t])
            a = learner.step(x[-1])
            r = (a == label).float()
            learner.reward(r)
            return r.mean().item()
        if self.name == "online":
            with torch.no_grad():  # no loss before the last step: only the traces advance
                for t in range(x.shape[0] - 1):
                    learner(x[t])
        else:
            for t in range(x.shape[0] - 1):
                learner.step(x[t])
        learner.step(x[-1], label)
        return learner.last_loss.item()


def train_cell(method: str, T: int, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Train one (method, length, seed) cell and evaluate it on the fixed test episodes of that length."""
    tc = cfg["train"]
    model = build_model(T, cfg["model"], seed)
    m = Method(method, model, T, cfg, seed)
    gen = torch.Generator().manual_seed(1000 * seed + T)
    updates = cfg["methods"][method]["updates"]
    t0 = time.perf_counter()
    curve = []
    for _ in range(updates):
        x, label = make_batch(T, tc["batch"], cfg["task"], gen)
        curve.append(m.episode(x, label))
    seconds = time.perf_counter() - t0
    x_test, y_test = make_batch(T, cfg["eval"]["episodes"], cfg["task"], torch.Generator().manual_seed(10**6 + T))
    return {
        "accuracy": accuracy(model, x_test, y_test),
        "train_seconds": seconds,
        "updates": updates,
        "readout_beta": model[3].beta.tolist(),
        "curve": curve,
    }


def run_method(ctx, method: str) -> dict[str, Any]:
    cfg = ctx.config.data
    out: dict[str, Any] = {}
    for T in cfg["train"]["lengths"]:
        cells = []
        for seed in cfg["seeds"]:
            path = ctx.run_dir / method / f"T{T}-seed{seed}.json"
            if path.is_file():
                cell = json.loads(path.read_text())
            else:
                cell = train_cell(method, T, seed, cfg)
                write_json(path, cell)
                print(f"poisson_clicks {method} T={T} seed={seed}: accuracy {cell['accuracy']:.3f} "
                      f"({cell['train_seconds']:.1f} s)", flush=True)  # fmt: skip
            cells.append(cell)
        accs = [c["accuracy"] for c in cells]
        mean = sum(accs) / len(accs)
        sd = (sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
        out[str(T)] = {
            "mean": mean,
            "std": sd,
            "seeds": accs,
            "train_seconds": sum(c["train_seconds"] for c in cells),
            "readout_beta": [c["readout_beta"] for c in cells],
            "curves": [c["curve"] for c in cells],
        }
    return out


# ------------------------------------------------------------------------------------------------ memory
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(method: str, T: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """One training episode in this (fresh) process: its peak resident memory above the resident size before.

    The kernel's peak (``VmHWM``, which ``getrusage``'s ``ru_maxrss`` reports) is reset to the current size just
    before the episode by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0); otherwise the peak of
    importing torch would hide a small episode. Without the reset the probe says so (``peak_reset`` false)."""
    torch.set_num_threads(1)
    mem = cfg["memory"]
    model = build_model(T, cfg["model"], 0)
    m = Method(method, model, T, cfg, 0)
    x, label = make_batch(T, mem["batch"], cfg["task"], torch.Generator().manual_seed(T))
    m.episode(x[:2], label)  # warm-up: allocator, lazy states, optimiser state
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    m.episode(x, label)
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    return {
        "rss_before_mb": before,
        "peak_mb": peak,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "peak_reset": reset,
        "episode_mb": max(0.0, peak - before),
        "seconds": seconds,
        "input_mb": x.numel() * x.element_size() / 2**20,
    }


def run_memory(ctx) -> dict[str, Any]:
    cfg = ctx.config.data
    out: dict[str, Any] = {}
    for method in cfg["memory"]["methods"]:
        out[method] = {}
        for T in cfg["memory"]["lengths"]:
            path = ctx.run_dir / "memory" / f"{method}-T{T}.json"
            if path.is_file():
                res = json.loads(path.read_text())
            else:
                cmd = [sys.executable, __file__, "memory-probe", method, str(T), json.dumps(cfg)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                if proc.returncode:
                    raise SystemExit(f"poisson_clicks: memory probe {method} T={T} failed:\n{proc.stderr[-3000:]}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                write_json(path, res)
                print(f"poisson_clicks memory {method} T={T}: +{res['episode_mb']:.1f} MB "
                      f"({res['seconds']:.1f} s)", flush=True)  # fmt: skip
            out[method][str(T)] = res
    lo, hi = (str(v) for v in (min(cfg["memory"]["lengths"]), max(cfg["memory"]["lengths"])))
    growth = {m: out[m][hi]["episode_mb"] - out[m][lo]["episode_mb"] for m in out}
    return {"per_length": out, "growth_mb": growth, "from_length": int(lo), "to_length": int(hi)}


# ---------------------------------------------------------------------------------------------- ttexp API
def parts(ctx) -> list[str]:
    """Each method trains in its own process; ``memory`` runs the probes."""
    return [*ctx.config["methods"], "memory"]


def run(ctx) -> dict[str, Any] | None:
    """Run every wanted part; return the results once all parts are done (``None`` until then)."""
    names = parts(ctx)
    results: dict[str, Any] = {}
    for part in names:
        done = ctx.run_dir / part / "result.json"
        if done.is_file():
            results[part] = json.loads(done.read_text())
        elif ctx.wants(part):
            results[part] = run_memory(ctx) if part == "memory" else run_method(ctx, part)
            write_json(done, results[part])
    missing = [p for p in names if p not in results]
    if missing:
        print(f"poisson_clicks: parts not finished yet: {missing}; results are written once all are done")
        return None
    cfg = ctx.config.data
    ideal = {}
    for T in cfg["train"]["lengths"]:
        x, y = make_batch(T, cfg["eval"]["episodes"], cfg["task"], torch.Generator().manual_seed(10**6 + T))
        ideal[str(T)] = ideal_counter_accuracy(x, y)
    acc = {m: results[m] for m in cfg["methods"]}
    return {"accuracy": acc, "ideal_counter": ideal, "memory": results["memory"]}


def table(results: dict[str, Any]) -> str:
    """Markdown results (generated from results.json; do not edit by hand)."""
    cfg = results["config"]
    prov = results["provenance"]
    lengths = [str(T) for T in cfg["train"]["lengths"]]
    lines = [
        *table_header(results, "poisson_clicks"),
        f"Test accuracy (mean +- sd over seeds {cfg['seeds']}, {cfg['eval']['episodes']} test episodes per length; "
        f"{cfg['task']['clicks']} clicks expected per episode):",
        "",
        "| method | " + " | ".join(f"T = {T}" for T in lengths) + " | train time |",
        "|---|" + "---:|" * (len(lengths) + 1),
    ]
    for m, r in results["accuracy"].items():
        cells = " | ".join(f"{r[T]['mean']:.3f} +- {r[T]['std']:.3f}" for T in lengths)
        secs = sum(r[T]["train_seconds"] for T in lengths)
        lines.append(f"| {m} ({cfg['methods'][m]['updates']} updates) | {cells} | {secs / 60:.1f} min |")
    lines.append(
        "| ideal click counter | " + " | ".join(f"{results['ideal_counter'][T]:.3f}" for T in lengths) + " | - |"
    )
    mem = results["memory"]
    mlen = [str(T) for T in cfg["memory"]["lengths"]]
    lines += [
        "",
        f"Peak memory of one training episode (batch {cfg['memory']['batch']}), MB: the peak resident set size "
        "(`VmHWM` = `ru_maxrss`, reset just before the episode) of a fresh process minus its resident size at that "
        "moment (torch, model and data already loaded):",
        "",
        "| method | " + " | ".join(f"T = {T}" for T in mlen) + f" | growth {mlen[0]} -> {mlen[-1]} |",
        "|---|" + "---:|" * (len(mlen) + 1),
    ]
    for m, r in mem["per_length"].items():
        cells = " | ".join(f"{r[T]['episode_mb']:.1f} ({r[T]['seconds']:.1f} s)" for T in mlen)
        lines.append(f"| {m} | {cells} | {mem['growth_mb'][m]:+.1f} |")
    lines += [
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``accuracy.png`` (accuracy vs T) and ``memory.png`` (episode memory vs T, log-log)."""
    import matplotlib.pyplot as plt

    cfg = results["config"]
    lengths = cfg["train"]["lengths"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, r in results["accuracy"].items():
        ax.errorbar(lengths, [r[str(T)]["mean"] for T in lengths], [r[str(T)]["std"] for T in lengths],
                    marker="o", capsize=3, label=m)  # fmt: skip
    ax.plot(lengths, [results["ideal_counter"][str(T)] for T in lengths], "k--", lw=1, label="ideal counter")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "accuracy.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    mlen = cfg["memory"]["lengths"]
    for m, r in results["memory"]["per_length"].items():
        ax.plot(mlen, [max(r[str(T)]["episode_mb"], 0.1) for T in mlen], "o-", label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel("peak memory of one episode (MB, floor 0.1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "memory.png")


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "memory-probe":
    print(json.dumps(memory_probe(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))))
