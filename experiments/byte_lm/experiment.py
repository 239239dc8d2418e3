"""Byte-level language model: a stack of ``tt.ssm.Mamba`` blocks vs an LSTM of equal parameter count.

Both models read raw UTF-8 bytes and are trained on exactly the same batches (truncated BPTT over contiguous
streams with the hidden states carried from batch to batch, as the model is used when streaming), with the same
optimizer and schedule. The held-out split is fixed by byte offset (the corpus's last ``heldout_fraction``);
the table also gives what stdlib compressors achieve on the same bytes.

Parts: one per ``[models.<part>]`` table; ``--only <part>`` trains one (parts can run in parallel processes),
and the run that finds every part finished writes the results.
"""

from __future__ import annotations

import bz2
import copy
import json
import lzma
import math
import time
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch_zoo import bytelm  # noqa: F401 - registers the bytelm-* architectures
from ttexp import Trainer, dist
from ttexp.corpora import read_text, sword_dump
from ttexp.results import provenance_line, save_figure, table_header, write_json, write_weights
from ttexp.schedule import lr_at

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------------- data
def load_corpus(ctx) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(train, heldout, info)`` bytes of the configured corpus, loaded through ``datasets``."""
    import datasets

    cfg = ctx.config["data"]
    cache = ctx.root / "experiments" / ".data"
    hf_cache = str(cache / "hf-datasets")
    source = cfg["source"]
    if source == "hub":  # machines with Hub access: e.g. wikitext-103 with its own validation split
        ds = datasets.load_dataset(cfg["dataset"], cfg["name"], cache_dir=hf_cache)
        train = "".join(ds["train"]["text"]).encode("utf-8")
        held = "".join(ds[cfg.get("heldout_split", "validation")]["text"]).encode("utf-8")
        info = {"source": f"{cfg['dataset']}/{cfg['name']}", "heldout": cfg.get("heldout_split", "validation")}
    else:
        if source == "sword":  # dumped once (apt-get install diatheke sword-comm-tdavid)
            path = cache / f"{cfg['module'].lower()}.txt"
            sword_dump(cfg["module"], cfg["key"], cfg["package"], path, who="byte_lm")
        elif source == "file":
            path = ctx.root / cfg["path"]
        else:
            raise SystemExit(f"byte_lm: data.source must be sword, file or hub, got {source!r}")
        text, digest = read_text(path, cache / "hf-datasets", sha256=cfg.get("sha256", ""), who="byte_lm")
        n_held = round(len(text) * cfg["heldout_fraction"])
        train, held = text[:-n_held], text[-n_held:]
        info = {"source": str(path.relative_to(ctx.root)) if path.is_relative_to(ctx.root) else str(path)}
        info.update(sha256=digest, heldout="last {:.0%} by byte offset".format(cfg["heldout_fraction"]))
    info.update(train_bytes=len(train), heldout_bytes=len(held), license=cfg.get("license", ""))
    return train, held, info


def compressor_baselines(held: bytes) -> dict[str, float]:
    """Bits per byte of stdlib compressors on the held-out bytes, compressed alone."""

    def bpb(blob: bytes) -> float:
        return 8.0 * len(blob) / len(held)

    return {
        "lzma": bpb(lzma.compress(held, preset=9 | lzma.PRESET_EXTREME)),
        "bz2": bpb(bz2.compress(held, 9)),
        "zlib": bpb(zlib.compress(held, 9)),
    }


class Streams:
    """Truncated-BPTT batches: ``batch`` contiguous streams through ``data``, ``seq`` bytes per step.

    Stream ``r`` reads ``data[r * per + pos : ... + seq + 1]`` at step ``s`` with ``pos = (s % steps_per_epoch)
    * seq``; a rank takes its slice of the rows. Everything is a function of the step, so resuming needs no
    data-loader state.
    """

    def __init__(self, data: bytes, batch: int, seq: int, rank: int = 0, world: int = 1) -> None:
        if batch % world:
            raise ValueError(f"batch {batch} must be divisible by the world size {world}")
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.seq = seq
        self.per = (len(data) - 1) // batch
        self.steps_per_epoch = self.per // seq
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(data)} bytes are too few for batch {batch} x seq {seq}")
        local = batch // world
        self.rows = torch.arange(rank * local, (rank + 1) * local) * self.per  # [b] stream starts

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(x [seq, b], y [seq, b], new_epoch)`` as int64; ``new_epoch``: the streams restart here."""
        e = step % self.steps_per_epoch
        idx = self.rows.unsqueeze(0) + e * self.seq + torch.arange(self.seq + 1).unsqueeze(1)  # [seq + 1, b]
        chunk = self.data[idx].long()
        return chunk[:-1], chunk[1:], e == 0


# ---------------------------------------------------------------------------------------------- training
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on embeddings, norms, biases, ``A_log``, ``D``)."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        matrix = p.ndim >= 2 and "embed" not in name and not name.endswith("A_log")
        (decay if matrix else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: bytes, *, streams: int, seq: int, device: str) -> float:
    """Bits per byte of ``model`` on ``data``: ``streams`` contiguous streams from zero state, ``seq`` bytes per
    call, states carried. Runs on a copy, so the training states are untouched."""
    m = copy.deepcopy(model).eval()
    tt.zero_states(m)
    s = Streams(data, streams, seq)
    total, count = 0.0, 0
    for step in range(s.steps_per_epoch):
        x, y, _ = s.batch(step)
        logits = m.scan(x.to(device))
        total += F.cross_entropy(logits.reshape(-1, 256).float(), y.to(device).reshape(-1), reduction="sum").item()
        count += y.numel()
    return total / count / LN2


def build_model(ctx, part: str) -> torch.nn.Module:
    torch.manual_seed(ctx.seed)  # identical init on every rank
    mc = ctx.config["models"][part]
    return zoo.build({"architecture": mc["architecture"], "init_args": mc["init_args"]}).to(ctx.device)


def train_part(ctx, part: str, train: bytes, held: bytes) -> dict[str, Any]:
    """Train one model (resuming if a checkpoint exists); returns its results (also saved to the run dir)."""
    tc = ctx.config["train"]
    done_file = ctx.run_dir / part / "result.json"
    model = build_model(ctx, part)
    opt = torch.optim.AdamW(param_groups(model, tc["weight_decay"]), lr=tc["lr"], betas=tuple(tc["betas"]))
    trainer = Trainer(ctx, part, model, opt, total_steps=tc["steps"], checkpoint_every=tc["checkpoint_every"])
    trainer.resume()
    if trainer.done and done_file.is_file():
        return json.loads(done_file.read_text())
    # provenance of every process that trained this part (a first start, then each resume)
    trainer.extra.setdefault("runs", []).append({"start_step": trainer.start, **ctx.provenance()})
    streams = Streams(train, tc["batch"], tc["seq"], ctx.rank, ctx.world_size)
    net = dist.wrap(model)
    params = [p for p in model.parameters()]
    eval_held = held[: tc["eval_bytes"]]
    ev = ctx.config["eval"]
    running: list[float] = []
    for step in trainer.steps():
        x, y, new_epoch = streams.batch(step)
        if new_epoch:
            tt.zero_states(model)
        lr = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = net(x.to(ctx.device))
        loss = F.cross_entropy(logits.reshape(-1, 256).float(), y.to(ctx.device).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, tc["clip"])
        opt.step()
        tt.detach_states(model)
        running.append(dist.all_reduce_mean(loss.detach()).item() / LN2)
        if (step + 1) % tc["log_every"] == 0:
            row = {"train_bpb": sum(running) / len(running), "lr": lr, "grad_norm": float(gnorm)}
            running.clear()
            if (step + 1) % tc["eval_every"] == 0 or step + 1 == tc["steps"]:
                if ctx.is_main:
                    row["heldout_bpb_subset"] = evaluate(
                        model, eval_held, streams=ev["streams"], seq=ev["seq"], device=ctx.device
                    )
                dist.barrier()
            trainer.log(step, **row)
    if not trainer.done:
        return {}
    result = {}
    if ctx.is_main:
        t0 = time.perf_counter()
        heldout = evaluate(model, held, streams=ev["streams"], seq=ev["seq"], device=ctx.device)
        eval_s = time.perf_counter() - t0
        n_bytes = tc["steps"] * tc["batch"] * tc["seq"]
        wall = trainer.extra["wall_seconds"]
        tail = [r["train_bpb"] for r in trainer.history[-10:]]
        result = {
            "architecture": ctx.config["models"][part]["architecture"],
            "init_args": ctx.config["models"][part]["init_args"],
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "heldout_bpb": heldout,
            "train_bpb_final": sum(tail) / max(1, len(tail)),
            "train_bytes_seen": n_bytes,
            "epochs": n_bytes / max(1, len(train)),
            "wall_seconds": wall,
            "train_bytes_per_second": n_bytes / wall if wall > 0 else None,
            "eval_seconds": eval_s,
            "history": trainer.history,
            "runs": trainer.extra["runs"],
            "sample": sample_text(model, ctx),
        }
        write_weights(model, ctx.run_dir / part / "model.safetensors")  # for publishing
        write_json(done_file, result)  # "done" is recorded last, once the weights are complete
    dist.barrier()
    return result


def sample_text(model: torch.nn.Module, ctx) -> str:
    """A seeded sample from the prompt in ``[sample]`` (fresh states, so training states are untouched)."""
    sc = ctx.config["sample"]
    m = copy.deepcopy(model).eval()
    tt.zero_states(m)
    gen = torch.Generator().manual_seed(ctx.seed)
    out = b"".join(
        m.stream_bytes(
            sc["prompt"].encode(),
            max_bytes=sc["bytes"],
            temperature=sc["temperature"],
            top_k=sc["top_k"],
            generator=gen,
        )
    )
    return sc["prompt"] + out.decode("utf-8", errors="replace")


def parts(ctx) -> list[str]:
    """The models this experiment trains (each can run in its own process)."""
    return list(ctx.config["models"])


def run(ctx) -> dict[str, Any] | None:
    """Train every wanted part; return the results once all parts are done (``None`` until then)."""
    torch.manual_seed(ctx.seed)
    train, held, info = load_corpus(ctx)
    parts = list(ctx.config["models"])
    results: dict[str, Any] = {}
    for part in parts:
        done_file = ctx.run_dir / part / "result.json"
        if ctx.wants(part):
            results[part] = train_part(ctx, part, train, held)
        elif done_file.is_file():
            results[part] = json.loads(done_file.read_text())
    missing = [p for p in parts if not results.get(p)]
    if missing:
        if ctx.is_main:
            print(f"byte_lm: parts not finished yet: {missing}; results are written once all are done")
        return None
    out = {"data": info, "baselines_bpb": compressor_baselines(held), "models": results, "main": ctx.config["main"]}
    if ctx.config.get("compare_with"):
        out["compared"] = compared_results(ctx, info)
    return out


def compared_results(ctx, info: dict[str, Any]) -> dict[str, Any]:
    """The models of version ``compare_with`` (its committed results.json), if trained on the same bytes and split
    (same corpus digest and held-out split); ``{}`` otherwise (e.g. a smoke run on the shipped excerpt)."""
    version = ctx.config["compare_with"]
    path = ctx.exp_dir / version / "results" / "results.json"
    if not path.is_file():
        return {}
    other = json.loads(path.read_text())
    same = (other["data"].get("sha256"), other["data"]["heldout"]) == (info.get("sha256"), info["heldout"])
    same = same and other["config"]["train"] == ctx.config["train"]
    if not same:
        return {}
    return {f"{part} ({version})": {k: v for k, v in r.items() if k not in ("history", "runs", "sample")}
            for part, r in other["models"].items()}  # fmt: skip


# ---------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    """Markdown results table (generated from results.json; do not edit by hand)."""
    d = results["data"]
    prov = results["provenance"]
    lines = [
        *table_header(results, "byte_lm"),
        f"Data: {d['source']} ({d['license'] or 'license: see config'}); train {d['train_bytes']:,} bytes, "
        f"held-out {d['heldout_bytes']:,} bytes ({d['heldout']}).",
        "",
        "| model | parameters | held-out bits/byte | train bits/byte (end) | bytes seen (epochs) | wall time | "
        "train bytes/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for part, r in results["models"].items():
        star = " (published)" if part == results["main"] else ""
        lines.append(
            f"| {part}: `{r['architecture']}`{star} | {r['num_parameters']:,} | **{r['heldout_bpb']:.3f}** | "
            f"{r['train_bpb_final']:.3f} | {r['train_bytes_seen']:,} ({r['epochs']:.2f}) | "
            f"{r['wall_seconds'] / 60:.1f} min | {r['train_bytes_per_second']:,.0f} |"
        )
    for part, r in results.get("compared", {}).items():
        lines.append(
            f"| {part}: `{r['architecture']}` (same data and training, from its results.json) | "
            f"{r['num_parameters']:,} | **{r['heldout_bpb']:.3f}** | {r['train_bpb_final']:.3f} | "
            f"{r['train_bytes_seen']:,} ({r['epochs']:.2f}) | {r['wall_seconds'] / 60:.1f} min | "
            f"{r['train_bytes_per_second']:,.0f} |"
        )
    for name, v in results["baselines_bpb"].items():
        lines.append(f"| stdlib `{name}` (max. compression, held-out alone) | - | {v:.3f} | - | - | - | - |")
    lines += [
        "",
        "Same batches, steps, optimizer and schedule for every model: "
        + ", ".join(f"{k}={v}" for k, v in results["config"]["train"].items() if not isinstance(v, list)),
        "",
        provenance_line(prov),
        "",
    ]
    for part, r in results["models"].items():
        lines += [f"Sample from `{part}` (seed {prov['seed']}):", "", "```text", r["sample"], "```", ""]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``curves.png``: training and held-out bits/byte against bytes seen, every model, compressors dashed."""
    import matplotlib.pyplot as plt

    tc = results["config"]["train"]
    per_step = tc["batch"] * tc["seq"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (part, r) in enumerate(results["models"].items()):
        h = r["history"]
        color = f"C{i}"
        ax.plot(
            [row["step"] * per_step for row in h],
            [row["train_bpb"] for row in h],
            color=color,
            alpha=0.5,
            lw=1,
            label=f"{part} train",
        )
        ev = [row for row in h if "heldout_bpb_subset" in row]
        ax.plot(
            [row["step"] * per_step for row in ev],
            [row["heldout_bpb_subset"] for row in ev],
            "o-",
            color=color,
            ms=3,
            label=f"{part} held-out (subset)",
        )
        ax.axhline(r["heldout_bpb"], color=color, ls=":", lw=1)
    for i, (part, r) in enumerate(results.get("compared", {}).items(), len(results["models"])):
        ax.axhline(r["heldout_bpb"], color=f"C{i}", ls=":", lw=1.2, label=f"{part} held-out (final)")
    for name, v in results["baselines_bpb"].items():
        ax.axhline(v, color="gray", ls="--", lw=0.8)
        ax.text(0, v, f" {name}", va="bottom", fontsize=7, color="gray")
    ax.set_xlabel("training bytes seen")
    ax.set_ylabel("bits per byte")
    ax.set_ylim(bottom=min(1.0, ax.get_ylim()[0]), top=min(4.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"byte_lm {results['version']}: bits per byte (dotted: final held-out)")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")


# ---------------------------------------------------------------------------------------------- publishing
def publish(
    ctx,
    *,
    endpoint: str | None = None,
    local_hub: str | None = None,
    repo_id: str | None = None,
    registry_dir: str | None = None,
    part: str | None = None,
) -> Path:
    """Publish a model of a finished run (``part``, default the config's ``main``) with
    ``tracetorch_zoo.publish``: weights, config, the ``preamble`` state snapshot, results, this config, golden
    tensors and model card, pushed to the Hub (``endpoint``, or a local test Hub served from ``local_hub``), then
    the registry entry pinned to the new commit and, with ``embed``, the files inside the zoo package. The entry's
    name and repository come from ``[publish]`` for the main part and ``[publish.parts.<part>]`` for others.
    Returns the entry's JSON path."""
    from safetensors.torch import load_file

    from ttexp.publishing import finished_results, publish_entry, trained_weights

    results = finished_results(ctx)
    part = part or results["main"]
    pc = dict(ctx.config["publish"])
    if part != results["main"]:
        if part not in pc.get("parts", {}):
            raise SystemExit(
                f"byte_lm publish: no [publish.parts.{part}] in the config (name and repo_id of its entry)"
            )
        pc |= pc["parts"][part]
    model = build_model(ctx, part)
    model.load_state_dict(load_file(str(trained_weights(ctx, ctx.run_dir / part, results["models"][part]))))
    model.eval()
    train, held, info = load_corpus(ctx)
    preamble = train[: pc["preamble_bytes"]]
    tt.zero_states(model)
    with torch.no_grad():
        model.scan(torch.tensor(list(preamble), dtype=torch.long).unsqueeze(-1))
    snapshot = model.save_states()
    tt.zero_states(model)
    golden = torch.tensor(list(held[: 2 * pc["golden_bytes"]]), dtype=torch.long).view(2, -1).t().contiguous()
    r = results["models"][part]
    dataset = corpus_dataset(ctx.config["data"], info)
    split = info["heldout"]

    def metric(name: str, value: float, **extra: Any) -> dict[str, Any]:
        out = {"name": name, "type": "bits_per_byte", "value": round(value, 4), "dataset": dataset, "split": split}
        return out | {"task": "text-generation"} | extra

    family = {"bytelm-mamba": "Mamba (tt.ssm.Mamba blocks)", "bytelm-lstm": "LSTM (tt.rnn.LSTM layers)",
              "bytelm-snn": "spiking (tt.snn layers)"}  # fmt: skip
    comparisons = [metric(f"{k}: {family.get(v['architecture'], v['architecture'])}", v["heldout_bpb"],
                          source=f"{ctx.name} {ctx.version}, same bytes seen")
                   for k, v in results["models"].items() if k != part]  # fmt: skip
    comparisons += [metric(f"stdlib {k} (max. compression)", v, source="the held-out bytes compressed alone")
                    for k, v in results["baselines_bpb"].items()]  # fmt: skip
    kind = family.get(r["architecture"], r["architecture"])
    usage = "\n".join([
        "import tracetorch_zoo as zoo",
        "",
        f'lm = zoo.load("{pc["name"]}", states="preamble")  # embedded in tracetorch-zoo: works offline',
        'for piece in lm.stream_bytes(b"Psalms 23:1: ", max_bytes=200, temperature=0.8):',
        '    print(piece.decode("utf-8", "replace"), end="", flush=True)  # bytes appear as they are generated',
    ])  # fmt: skip
    metadata = {
        "name": pc["name"],
        "experiment": ctx.name,
        "version": ctx.version,
        "dataset": dataset["name"],
        "task": "text-generation",
        "license": "mit",
        "data_license": info["license"],
        "metrics": [metric("held-out bits per byte", r["heldout_bpb"])],
        "comparisons": comparisons,
        "git_sha": results["provenance"]["git"]["sha"],
        "usage": usage,
        "description": (
            f"A byte-level language model ({r['num_parameters']:,} parameters, {kind}) trained by experiment "
            f"{ctx.name} {ctx.version} on {dataset['name']}; it reads and writes raw UTF-8 bytes, one per step, with "
            "a fixed-size hidden state (stream as long as you like in constant memory)."
        ),
        "intended_use": "Streaming text generation and next-byte prediction in the style of 19th-century English "
        "devotional prose; a small, CPU-trainable example of a stateful byte LM with hidden-state snapshots.",
        "limitations": "Trained on one 11.5 MB book: it imitates its style and invents facts, references and "
        "quotations. No safety tuning. English only; other text is out of distribution.",
    }
    preamble_info = {
        "meaning": f"states after reading the first {len(preamble)} bytes of the training corpus (batch 1): "
        "generation starts in the corpus's style",
        "primed_on": f"the first {len(preamble)} bytes of the training corpus",
        "steps_consumed": str(len(preamble)),
    }
    return publish_entry(
        ctx, model, results, r | {"history": r["history"][-5:]}, pc=pc,
        snapshot=("preamble", snapshot, preamble_info), golden_inputs=golden, metadata=metadata,
        license=info["license"] + "; weights MIT", tag=f"{ctx.name}-{ctx.version}-{part}",
        endpoint=endpoint, local_hub=local_hub, repo_id=repo_id, registry_dir=registry_dir,
    )  # fmt: skip


def corpus_dataset(dc: dict[str, Any], info: dict[str, Any]) -> dict[str, str]:
    """``{"id", "name"}`` of the corpus for model cards: a Hub dataset id, the Debian package, or the file."""
    if dc["source"] == "hub":
        return {"id": dc["dataset"], "name": f"{dc['dataset']} ({dc['name']})"}
    if dc["source"] == "sword":
        return {
            "id": dc["package"],
            "name": "The Treasury of David (C. H. Spurgeon), CrossWire SWORD module " + dc["module"],
        }
    return {"id": Path(dc["path"]).name, "name": f"{Path(dc['path']).name} ({info['license']})"}
