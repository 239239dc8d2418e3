"""Selective Copying (Mamba, Gu & Dao 2023, Table 1), scaled down for a 2-core CPU.

Task (the variable-spacing Copying task of state-spaces/s4's ``copying.py``, ``variable=True``): token 0 is
noise, tokens ``1 .. vocab-2`` are data, token ``vocab-1`` is the marker. ``memorize`` data tokens are drawn
uniformly and placed, in order, at random sorted positions among ``noise + memorize`` slots (the rest are noise);
then ``memorize`` marker tokens follow. At the marker positions the model must output the data tokens in order.
Because the spacing is random, a time-invariant model cannot solve it by counting: it has to select by content.

Models (Table 1's architecture x inner layer grid, built from ``tracetorch.ssm``), all with the same embedding,
pre-norm residual blocks, final norm and linear head:

* ``nogate`` blocks: ``x + W gelu(SSM(norm(x)))`` (the S4 block: SSM, activation, position-wise linear), with
  ``SSM`` = ``tt.ssm.S4D`` (LTI) or ``tt.ssm.S6`` (selective), on ``d_model`` channels;
* ``mamba`` blocks: ``x + Mamba(norm(x))``. With S6 inside this is ``tt.ssm.Mamba`` itself; with S4D inside it
  is the same block (in_proj, causal depthwise conv, SiLU, SSM on ``expand * d_model`` channels, SiLU gate,
  out_proj) with ``tt.ssm.S4D`` in place of S6 (:class:`GatedS4D`).

Training: cross-entropy on the ``memorize`` output positions only, fresh batches every step (a function of the
seed and the step, so resuming needs no data-loader state), every sequence from zero hidden states. Accuracy:
per-token accuracy on the tokens to copy, over fresh test batches drawn from a separate seeded stream.

Parts: one per ``[models.<part>]`` table; each part trains every seed in ``seeds`` in turn (checkpointing and
resuming per seed), and the run that finds every part finished writes the results.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tracetorch as tt
from ttexp import Trainer
from ttexp.results import provenance_line, save_figure, table_header, write_json
from ttexp.schedule import lr_at

# Table 1 of Gu & Dao (arXiv:2312.00752v2, §4.1.1): accuracy (%) by architecture and inner layer, VERIFIED in
# ../../shared/PAPERS.md §1 (three independent copies of the paper agree). Keys: (architecture, layer).
PAPER = "Gu & Dao 2023, Mamba, Table 1 (arXiv:2312.00752v2)"
PAPER_TABLE1: dict[tuple[str, str], tuple[str, float]] = {
    ("No gate", "S4"): ("S4", 18.3),
    ("No gate", "S6"): ("-", 97.0),
    ("H3", "S4"): ("H3", 57.0),
    ("H3", "Hyena"): ("Hyena", 30.1),
    ("H3", "S6"): ("-", 99.7),
    ("Mamba", "S4"): ("-", 56.4),
    ("Mamba", "Hyena"): ("-", 28.4),
    ("Mamba", "S6"): ("Mamba", 99.8),
}
PAPER_SETUP = "sequence length 4096, vocab 16, 16 tokens to memorise, 2 layers, D = 64, 400K steps x batch 64"


# --------------------------------------------------------------------------------------------------- task
def copying_batch(task: dict[str, Any], batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One batch of the selective copying task.

    Returns ``x`` ``[noise + 2 * memorize, batch]`` int64 (time first) and the targets ``y`` ``[memorize, batch]``,
    which the model must emit at the last ``memorize`` positions (the markers).
    """
    n_noise, m, vocab = task["noise"], task["memorize"], task["vocab"]
    if vocab < 3 or m < 1 or n_noise < 0:
        raise ValueError(f"copying_batch: need vocab >= 3, memorize >= 1, noise >= 0; got {task}")
    slots = n_noise + m
    tokens = torch.randint(1, vocab - 1, (batch, m), generator=generator)  # data tokens 1 .. vocab-2
    # m distinct random slots per row, sorted (same distribution as randperm(slots)[:m].sort())
    where = torch.rand(batch, slots, generator=generator).argsort(dim=1)[:, :m].sort(dim=1).values
    body = torch.zeros(batch, slots, dtype=torch.long).scatter_(1, where, tokens)
    markers = torch.full((batch, m), vocab - 1, dtype=torch.long)
    return torch.cat([body, markers], dim=1).t().contiguous(), tokens.t().contiguous()


def data_generator(seed: int, stream: str, index: int) -> torch.Generator:
    """A generator for batch ``index`` of ``stream`` (``train``/``test``): a pure function of its arguments."""
    salt = {"train": 0, "test": 1}[stream]
    return torch.Generator().manual_seed(((seed * 2 + salt) << 32) + index)


# --------------------------------------------------------------------------------------------------- models
class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last axis."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_ssm(layer: str, channels: int, d_state: int) -> tt.Layer:
    """The inner sequence layer on ``channels`` channels: ``s4d`` (LTI) or ``s6`` (selective)."""
    if layer == "s4d":
        return tt.ssm.S4D(channels, d_state=d_state)
    if layer == "s6":
        return tt.ssm.S6(channels, d_state=d_state)
    raise ValueError(f"unknown inner layer {layer!r} (s4d or s6)")


class NoGateMixer(tt.Model):
    """The S4 block's mixer without gate: ``W gelu(SSM(x))``, ``[T, batch, D]`` -> ``[T, batch, D]``."""

    def __init__(self, d_model: int, layer: str, d_state: int) -> None:
        super().__init__()
        self.ssm = make_ssm(layer, d_model, d_state)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(F.gelu(self.ssm(x)))

    def scan(self, x_seq: Tensor) -> Tensor:
        return self.out_proj(F.gelu(self.ssm.scan(x_seq)))


class GatedS4D(tt.Model):
    """The Mamba block with ``tt.ssm.S4D`` in place of S6 (Table 1's "Mamba / S4" row).

    ``(u, z) = in_proj(x)`` (``E + E``, ``E = expand * D``); ``u = silu(causal depthwise conv(u))``;
    ``y = S4D(u)``; ``out_proj(y * silu(z))``. ``scan`` only (``[T, batch, D]``), from a zero conv window: the
    experiment runs every sequence from zero states, so the conv needs no carried state.
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        e = expand * d_model
        self.d_conv = d_conv
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1, bias=True)  # as tt.ssm.Mamba
        self.ssm = tt.ssm.S4D(e, d_state=d_state)
        self.out_proj = nn.Linear(e, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError("GatedS4D runs whole sequences from zero states: use scan")

    def scan(self, x_seq: Tensor) -> Tensor:
        t = x_seq.shape[0]
        u, z = self.in_proj(x_seq).chunk(2, dim=-1)
        c = self.conv1d(u.permute(1, 2, 0))[..., :t]  # [batch, E, T], causal (left padding only kept)
        y = self.ssm.scan(F.silu(c.permute(2, 0, 1)))
        return self.out_proj(y * F.silu(z))


class Block(tt.Model):
    """Pre-norm residual block ``x + mixer(RMSNorm(x))``."""

    def __init__(self, d_model: int, arch: str, layer: str, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        if arch == "nogate":
            self.mixer = NoGateMixer(d_model, layer, d_state)
        elif arch == "mamba" and layer == "s6":
            self.mixer = tt.ssm.Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        elif arch == "mamba" and layer == "s4d":
            self.mixer = GatedS4D(d_model, d_state, d_conv, expand)
        else:
            raise ValueError(f"unknown block {arch!r} / {layer!r} (arch nogate or mamba; layer s4d or s6)")

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))

    def scan(self, x_seq: Tensor) -> Tensor:
        return x_seq + self.mixer.scan(self.norm(x_seq))


class CopyModel(tt.Model):
    """Embedding, ``n_layers`` blocks, RMSNorm, linear head: tokens ``[T, batch]`` -> logits ``[T, batch, V]``."""

    def __init__(
        self,
        vocab: int,
        *,
        arch: str,
        layer: str,
        d_model: int = 64,
        n_layers: int = 2,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(Block(d_model, arch, layer, d_state, d_conv, expand) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError("CopyModel is trained and evaluated on whole sequences: use scan")

    def scan(self, x_seq: Tensor) -> Tensor:
        h = self.embed(x_seq)
        for b in self.blocks:
            h = b.scan(h)
        return self.head(self.norm(h))


def build_model(mc: dict[str, Any], vocab: int, seed: int) -> CopyModel:
    torch.manual_seed(seed)
    return CopyModel(vocab, arch=mc["arch"], layer=mc["layer"], **mc["init_args"])


# ---------------------------------------------------------------------------------------------- training
def loss_and_correct(model: CopyModel, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy on the marker positions and the number of correctly copied tokens."""
    tt.zero_states(model)  # every sequence starts from zero states
    logits = model.scan(x)[-y.shape[0] :]  # [M, batch, V]
    tt.zero_states(model)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss, (logits.argmax(-1) == y).sum()


@torch.no_grad()
def evaluate(model: CopyModel, task: dict[str, Any], ev: dict[str, Any], seed: int, device: str) -> float:
    """Per-token accuracy (%) on ``ev["batches"]`` fresh test batches of ``ev["batch"]`` sequences."""
    was = model.training
    model.eval()
    correct = total = 0
    for i in range(ev["batches"]):
        x, y = copying_batch(task, ev["batch"], data_generator(seed, "test", i))
        correct += int(loss_and_correct(model, x.to(device), y.to(device))[1])
        total += y.numel()
    model.train(was)
    return 100.0 * correct / total


def train_seed(ctx, part: str, seed: int) -> dict[str, Any]:
    """Train ``part`` with ``seed`` (resuming from its checkpoints); returns its result ({} until finished)."""
    tc, task, ev = ctx.config["train"], ctx.config["task"], ctx.config["eval"]
    mc = ctx.config["models"][part]
    name = f"{part}/seed{seed}"
    done_file = ctx.run_dir / name / "result.json"
    model = build_model(mc, task["vocab"], seed).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]), weight_decay=tc["weight_decay"])
    trainer = Trainer(ctx, name, model, opt, total_steps=tc["steps"], checkpoint_every=tc["checkpoint_every"])
    trainer.resume()
    if trainer.done and done_file.is_file():
        return json.loads(done_file.read_text())
    trainer.extra.setdefault("runs", []).append({"start_step": trainer.start, **ctx.provenance()})
    running_loss: list[float] = []
    running_acc: list[float] = []
    for step in trainer.steps():
        x, y = copying_batch(task, tc["batch"], data_generator(seed, "train", step))
        lr = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, correct = loss_and_correct(model, x.to(ctx.device), y.to(ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip"])
        opt.step()
        running_loss.append(loss.item())
        running_acc.append(100.0 * int(correct) / y.numel())
        if (step + 1) % tc["log_every"] == 0:
            row = {
                "train_loss": sum(running_loss) / len(running_loss),
                "train_accuracy": sum(running_acc) / len(running_acc),
                "lr": lr,
                "grad_norm": float(gnorm),
            }
            running_loss.clear()
            running_acc.clear()
            if (step + 1) % tc["eval_every"] == 0 or step + 1 == tc["steps"]:
                row["test_accuracy_subset"] = evaluate(model, task, ctx.config["eval_subset"], seed, ctx.device)
            trainer.log(step, **row)
    if not trainer.done and not ctx.options.get("partial"):
        return {}
    # finished, or (--partial) as it stands where the time limit stopped it: evaluated the same way
    wall = trainer.extra["wall_seconds"]
    result = {
        "seed": seed,
        "steps_done": trainer.start,
        "test_accuracy": evaluate(model, task, ev, seed, ctx.device),
        "train_loss_final": trainer.history[-1]["train_loss"] if trainer.history else None,
        "wall_seconds": wall,
        "seconds_per_step": wall / max(trainer.start, 1),
        "history": trainer.history,
        "runs": trainer.extra["runs"],
    }
    if not trainer.done:
        return {**result, "partial": True}  # never written as the seed's result: a later run resumes
    write_json(done_file, result)
    return result


def train_part(ctx, part: str) -> dict[str, Any]:
    """Every seed of ``part``; the summary (mean, spread) once all are finished, else ``{}``."""
    per_seed = []
    for seed in ctx.config["seeds"]:
        r = train_seed(ctx, part, seed)
        if not r:
            return {}
        per_seed.append(r)
    return summarize(ctx, part, per_seed)


def summarize(ctx, part: str, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    mc = ctx.config["models"][part]
    acc = [r["test_accuracy"] for r in per_seed]
    model = build_model(mc, ctx.config["task"]["vocab"], 0)
    return {
        "arch": mc["arch"],
        "layer": mc["layer"],
        "paper_row": mc["paper_row"],
        "init_args": mc["init_args"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "test_accuracy_mean": statistics.fmean(acc),
        "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        "test_accuracy_min": min(acc),
        "test_accuracy_max": max(acc),
        "wall_seconds": sum(r["wall_seconds"] for r in per_seed),
        "partial": any(r.get("partial") for r in per_seed),
        "steps_done": [r.get("steps_done", ctx.config["train"]["steps"]) for r in per_seed],
        "seeds": per_seed,
    }


def parts(ctx) -> list[str]:
    """The models this experiment trains (each can run in its own process)."""
    return list(ctx.config["models"])


def run(ctx) -> dict[str, Any] | None:
    """Train every wanted part; return the results once all parts are done (``None`` until then)."""
    if ctx.config.get("threads"):  # tiny configs (smoke): more threads only add contention
        torch.set_num_threads(int(ctx.config["threads"]))
    names = parts(ctx)
    for part in names:
        row = tuple(ctx.config["models"][part]["paper_row"])
        if row not in PAPER_TABLE1:
            raise SystemExit(f"selective_copying: {part}.paper_row {list(row)} is not a row of Table 1")
    results: dict[str, Any] = {}
    for part in names:
        if ctx.wants(part):
            results[part] = train_part(ctx, part)
        else:  # finished by another process: summarise from its per-seed files
            files = [ctx.run_dir / f"{part}/seed{s}" / "result.json" for s in ctx.config["seeds"]]
            if all(f.is_file() for f in files):
                results[part] = summarize(ctx, part, [json.loads(f.read_text()) for f in files])
    missing = [p for p in names if not results.get(p)]
    if missing:
        print(f"selective_copying: parts not finished yet: {missing}; results are written once all are done")
        return None
    task = ctx.config["task"]
    return {
        "task": {
            **task,
            "sequence_length": task["noise"] + 2 * task["memorize"],
            "data_tokens": task["vocab"] - 2,
            "chance_accuracy": 100.0 / (task["vocab"] - 2),
        },
        "paper": {"source": PAPER, "setup": PAPER_SETUP},
        "models": results,
        "main": ctx.config["main"],
        "partial": any(r.get("partial") for r in results.values()),
    }


# ---------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    """Markdown results table (generated from results.json; do not edit by hand)."""
    t, prov, tc = results["task"], results["provenance"], results["config"]["train"]
    seeds = results["config"]["seeds"]
    at_paper_scale = t["sequence_length"] == 4096 and t["memorize"] == 16 and tc["steps"] == 400_000
    lines = [*table_header(results, "selective_copying")]
    if results.get("partial"):
        done = {part: r["steps_done"] for part, r in results["models"].items() if r.get("partial")}
        lines += [
            f"**PARTIAL RESULTS**: training stopped at a time limit before {tc['steps']:,} steps; unfinished models "
            "are evaluated as they stand (steps done per seed: "
            + "; ".join(f"`{p}` {', '.join(f'{s:,}' for s in d)}" for p, d in done.items())
            + "). A later run resumes from the checkpoints.",
            "",
        ]
    scale = "at the paper's setup" if at_paper_scale else "**scaled down**"
    lines += [
        f"Selective Copying, {scale}: sequence length {t['sequence_length']} ({t['noise']} noise + "
        f"{t['memorize']} data + {t['memorize']} markers), vocab {t['vocab']} ({t['data_tokens']} data tokens; "
        f"chance {t['chance_accuracy']:.1f} %), {t['memorize']} tokens to memorise; {tc['steps']:,} steps x batch "
        f"{tc['batch']}. Paper: {results['paper']['setup']}."
        + ("" if at_paper_scale else " Our numbers are not like-for-like with the paper's."),
        "",
        f"Accuracy: per-token accuracy (%) on the {t['memorize']} tokens to copy, over "
        f"{results['config']['eval']['batches'] * results['config']['eval']['batch']:,} fresh seeded test sequences;"
        f" mean +- sample std over seeds {seeds} (min-max in brackets).",
        "",
        "| Table 1 model | arch. | layer | ours: part | parameters | **ours: acc. (%)** | paper acc. (%) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    ours = {tuple(r["paper_row"]): (part, r) for part, r in results["models"].items()}
    for key, (name, paper_acc) in PAPER_TABLE1.items():
        arch, layer = key
        if key in ours:
            part, r = ours[key]
            acc = (
                f"**{r['test_accuracy_mean']:.1f}** +- {r['test_accuracy_std']:.1f} "
                f"[{r['test_accuracy_min']:.1f}-{r['test_accuracy_max']:.1f}]"
            )
            lines.append(
                f"| {name} | {arch} | {layer} | `{part}` ({r['arch']} + tt.ssm.{r['layer'].upper()}) | "
                f"{r['num_parameters']:,} | {acc} | {paper_acc} |"
            )
        else:
            lines.append(f"| {name} | {arch} | {layer} | not run | - | - | {paper_acc} |")
    lines += [
        "",
        f"Paper: {results['paper']['source']}; S4 rows here use S4D-Real (diagonal S4), the paper's S4 may differ.",
        "",
        "| part | wall time (all seeds) | s/step |",
        "|---|---:|---:|",
    ]
    for part, r in results["models"].items():
        sps = statistics.fmean(s["seconds_per_step"] for s in r["seeds"])
        lines.append(f"| {part} | {r['wall_seconds'] / 60:.1f} min | {sps:.3f} |")
    lines += [
        "",
        "Training (same for every model): "
        + ", ".join(f"{k}={v}" for k, v in tc.items() if not isinstance(v, list))
        + f", betas={tuple(tc['betas'])}.",
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``accuracy.png``: test accuracy (subset) against training step, every model and seed; paper dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (part, r) in enumerate(results["models"].items()):
        color = f"C{i}"
        for j, s in enumerate(r["seeds"]):
            ev = [row for row in s["history"] if "test_accuracy_subset" in row]
            ax.plot(
                [row["step"] for row in ev],
                [row["test_accuracy_subset"] for row in ev],
                "o-",
                color=color,
                ms=2,
                lw=1,
                alpha=0.8,
                label=f"{part} (final {r['test_accuracy_mean']:.1f} %)" if j == 0 else None,
            )
        ax.axhline(PAPER_TABLE1[tuple(r["paper_row"])][1], color=color, ls="--", lw=0.8)
    ax.axhline(results["task"]["chance_accuracy"], color="gray", ls=":", lw=0.8)
    ax.text(
        0.01, results["task"]["chance_accuracy"], "chance", va="bottom", fontsize=7, color="gray",
        transform=ax.get_yaxis_transform(),
    )  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("per-token accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(f"selective_copying {results['version']}: test accuracy (dashed: paper's Table 1)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "accuracy.png")
