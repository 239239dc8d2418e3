"""The published byte LM keeps learning while it reads new text: one pass, online, in constant memory.

``bytelm-mamba.small`` (the zoo's default entry, trained by ``byte_lm`` v1 on Spurgeon's *Treasury of David*) reads
a text it has never seen, Matthew Henry's *Concise Commentary* (CrossWire SWORD module ``MHCC``), one byte at a
time, in a single stream. Each byte is predicted with the weights of the moment and learned from afterwards through
``tt.online.TruncatedLearner`` (truncated BPTT in windows of ``window`` bytes: memory does not grow with the
stream). We report:

* prequential bits/byte over the stream (each byte scored before the model learns from it), per block, beside
  the frozen model's bits/byte on the same bytes;
* held-out bits/byte on the commentary's last ``heldout_fraction`` (never streamed) before and after the pass;
* bits/byte on text the model was trained on (the first bytes of the Treasury of David) before and after
  (forgetting);
* the process's resident memory along the stream (flat), and the stdlib compressors on the held-out bytes.

One part (``stream``); it checkpoints (weights, optimizer, hidden states) every few blocks and resumes.
"""

from __future__ import annotations

import bz2
import copy
import json
import lzma
import math
import os
import re
import resource
import time
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

import tracetorch as tt
import tracetorch_zoo as zoo
from ttexp.checkpoint import Checkpointer
from ttexp.corpora import read_text, sword_dump
from ttexp.results import provenance_line, save_figure, table_header, write_json, write_weights

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------------- data
_KEY = re.compile(r"^((?:I{1,3} )?[A-Z][A-Za-z]*(?: [A-Za-z]+)*? \d+:\d+): ?")
_SECTION = re.compile(r"\s{2,}(?=\* Verses? )|\s{2,}(?=Chapter \d+$)")


def sword_sections(raw: str) -> bytes:
    """The distinct sections of a ``diatheke -f plain`` dump, in order, one per line.

    The dump repeats a commentary's text under every verse it covers (and the Debian MHCC module repeats whole
    chapters); we drop the ``Book C:V:`` references, split entries at their ``* Verses a-b *`` and ``Chapter N``
    headings and keep every section the first time it appears, so no text is seen twice.
    """
    seen: set[str] = set()
    out: list[str] = []
    for line in raw.splitlines():
        m = _KEY.match(line)
        body = (line[m.end() :] if m else line).strip()
        for sec in _SECTION.split(body):
            sec = sec.strip()
            if len(sec) < 2 or sec in seen or re.fullmatch(r"\([A-Z]+\)", sec):
                continue
            seen.add(sec)
            out.append(sec)
    return ("\n".join(out) + "\n").encode("utf-8")


def _text_path(ctx, cfg: dict[str, Any], *, sections: bool) -> Path:
    """The local file of a ``[data]``-like table: a SWORD module dumped once (de-duplicated into sections when
    ``sections``), or a file in the repository."""
    if cfg["source"] != "sword":
        return ctx.root / cfg["path"]
    cache = ctx.root / "experiments" / ".data"
    name = cfg["module"].lower() + ("-sections" if sections else "")  # byte_lm dumps the raw tdavid.txt
    transform = (lambda raw: sword_sections(raw.decode("utf-8"))) if sections else None
    return sword_dump(cfg["module"], cfg["key"], cfg["package"], cache / f"{name}.txt", who="online_bytelm",
                      transform=transform)  # fmt: skip


def load_text(ctx) -> tuple[bytes, bytes, bytes, dict[str, Any]]:
    """``(stream, heldout, retention, info)``: the bytes streamed once, the held-out tail of the same text, and
    text the model was trained on. Loaded through ``datasets`` from local files."""
    cfg = ctx.config["data"]
    hf_cache = ctx.root / "experiments" / ".data" / "hf-datasets"
    path = _text_path(ctx, cfg, sections=True)
    text, digest = read_text(path, hf_cache, sha256=cfg.get("sha256", ""), who="online_bytelm")
    n_held = round(len(text) * cfg["heldout_fraction"])
    sc = ctx.config["stream"]
    if sc["bytes"] + 1 > len(text) - n_held:
        raise SystemExit(
            f"online_bytelm: stream.bytes {sc['bytes']:,} > the {len(text) - n_held - 1:,} bytes available"
        )
    stream, held = text[: sc["bytes"] + 1], text[-n_held:]
    retention = read_text(ctx.root / cfg["retention_path"], hf_cache, who="online_bytelm")[0][: cfg["retention_bytes"]]
    info = {
        "source": str(path.relative_to(ctx.root)) if path.is_relative_to(ctx.root) else str(path),
        "sha256": digest,
        "total_bytes": len(text),
        "stream_bytes": sc["bytes"],
        "heldout_bytes": len(held),
        "heldout": "last {:.0%} by byte offset".format(cfg["heldout_fraction"]),
        "retention_source": cfg["retention_path"],
        "retention_bytes": len(retention),
        "license": cfg.get("license", ""),
    }
    return stream, held, retention, info


def compressor_baselines(held: bytes) -> dict[str, float]:
    """Bits per byte of stdlib compressors on the held-out bytes, compressed alone."""
    return {
        "lzma": 8.0 * len(lzma.compress(held, preset=9 | lzma.PRESET_EXTREME)) / len(held),
        "bz2": 8.0 * len(bz2.compress(held, 9)) / len(held),
        "zlib": 8.0 * len(zlib.compress(held, 9)) / len(held),
    }


# --------------------------------------------------------------------------------------------------- measuring
@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, data: bytes, *, streams: int, seq: int) -> float:
    """Bits per byte of a copy of ``model`` on ``data``: ``streams`` contiguous streams from zero states."""
    m = copy.deepcopy(model).eval()
    tt.zero_states(m)
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    per = (len(t) - 1) // streams
    steps = per // seq
    if steps < 1:
        raise ValueError(f"{len(data)} bytes are too few for {streams} streams x {seq}")
    rows = torch.arange(streams) * per
    total, count = 0.0, 0
    for s in range(steps):
        idx = rows.unsqueeze(0) + s * seq + torch.arange(seq + 1).unsqueeze(1)
        chunk = t[idx]
        logits = m.scan(chunk[:-1])
        total += F.cross_entropy(logits.reshape(-1, 256), chunk[1:].reshape(-1), reduction="sum").item()
        count += chunk[1:].numel()
    return total / count / LN2


def rss_mib() -> float:
    """Resident set size of this process now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


# --------------------------------------------------------------------------------------------------- the pass
def parts(ctx) -> list[str]:
    return ["stream", "dynamic_eval"] if ctx.config.get("dynamic_eval") else ["stream"]


def run(ctx) -> dict[str, Any] | None:
    torch.manual_seed(ctx.seed)
    stream, held, retention, info = load_text(ctx)
    out: dict[str, Any] = {"data": info, "baselines_bpb": compressor_baselines(held)}
    for part in parts(ctx):
        done_file = ctx.run_dir / part / "result.json"
        if ctx.wants(part):
            if part == "stream":
                out[part] = stream_part(ctx, stream, held, retention)
            else:
                out[part] = dynamic_eval_part(ctx)
        elif done_file.is_file():
            out[part] = json.loads(done_file.read_text())
    missing = [p for p in parts(ctx) if not out.get(p)]
    if missing:
        print(f"online_bytelm: parts not finished yet: {missing}; results are written once all are done")
        return None
    return out


def new_learner(ctx) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Any]:
    """``(model, frozen, optimizer, learner)``: the published model learning online, and a frozen copy of it."""
    lc = ctx.config["learner"]
    model = zoo.load(ctx.config["model"]).to(ctx.device)
    frozen = copy.deepcopy(model).eval()  # the published weights, reading the same bytes without learning
    for p in frozen.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lc["lr"], betas=tuple(lc["betas"]), weight_decay=lc["weight_decay"])
    learner = tt.online.TruncatedLearner(
        model, opt, F.cross_entropy, window=lc["window"], clip_grad_norm=lc.get("clip")
    )
    return model, frozen, opt, learner


def online_pass(ctx, part: str, text: bytes, total: int, sc: dict[str, Any], before=None) -> dict[str, Any]:
    """Read ``text[: total + 1]`` once as one stream, every byte scored by the learner (before it learns from it)
    and by the frozen model; resumes from the last checkpoint. ``before(model)`` runs once, before the first
    byte. Returns ``{"model", "frozen", "meta"}`` with the per-report rows in ``meta["blocks"]``."""
    lc = ctx.config["learner"]
    block = sc["block"]
    if block % lc["window"] or sc["report_every"] % block or total % sc["report_every"]:
        raise SystemExit(f"online_bytelm {part}: need window | block | report_every | bytes")
    model, frozen, opt, learner = new_learner(ctx)
    ckpt = Checkpointer(ctx.run_dir / part / "checkpoints")
    both = torch.nn.ModuleDict({"model": model, "frozen": frozen})  # weights and hidden states of both, atomically
    meta: dict[str, Any] = {"pos": 0, "blocks": [], "runs": [], "wall_seconds": 0.0}
    latest = ckpt.latest()
    if latest is not None:
        meta = ckpt.load(latest, both, opt)["extra"]
        if meta["config_hash"] != ctx.config.hash:
            raise SystemExit(
                f"online_bytelm: {ckpt.path(latest)} was made with another config; delete {ctx.run_dir / part}"
            )
        learner.num_steps, learner.num_updates = meta["pos"], meta["pos"] // lc["window"]
    elif before is not None:
        meta["before"] = before(model)
    meta["config_hash"] = ctx.config.hash
    meta["runs"].append({"start_byte": meta["pos"], **ctx.provenance()})
    data = torch.frombuffer(bytearray(text[: total + 1]), dtype=torch.uint8).long().unsqueeze(-1)  # [total + 1, 1]
    acc = {"online": 0.0, "frozen": 0.0, "n": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=meta["pos"], unit="B", unit_scale=True, desc=part, mininterval=2)
    while meta["pos"] < total:
        pos = meta["pos"]
        x, y = data[pos : pos + block], data[pos + 1 : pos + block + 1]
        logits = learner.learn(x, y)  # [block, 1, 256]: every byte predicted before it is learned from
        with torch.no_grad():
            acc["online"] += F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), reduction="sum").item()
            acc["frozen"] += F.cross_entropy(frozen.scan(x).reshape(-1, 256), y.reshape(-1), reduction="sum").item()
        acc["n"] += block
        meta["pos"] = pos + block
        bar.update(block)
        if meta["pos"] % sc["report_every"] == 0:
            now = time.perf_counter()
            meta["wall_seconds"] += now - t0
            t0 = now
            row = {
                "bytes": meta["pos"],
                "online_bpb": acc["online"] / acc["n"] / LN2,
                "frozen_bpb": acc["frozen"] / acc["n"] / LN2,
                "rss_mib": rss_mib(),
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "wall_seconds": meta["wall_seconds"],
            }
            meta["blocks"].append(row)
            acc = {"online": 0.0, "frozen": 0.0, "n": 0}
            bar.set_postfix(
                online=f"{row['online_bpb']:.3f}", frozen=f"{row['frozen_bpb']:.3f}", rss=f"{row['rss_mib']:.0f}M"
            )
            if meta["pos"] % sc["checkpoint_every"] == 0 or meta["pos"] == total:
                ckpt.save(meta["pos"], both, opt, {"extra": meta})
    bar.close()
    meta["wall_seconds"] += time.perf_counter() - t0
    return {"model": model, "frozen": frozen, "meta": meta}


def summary(ctx, model: torch.nn.Module, meta: dict[str, Any], total: int) -> dict[str, Any]:
    """The numbers every pass reports: prequential bits/byte (online and frozen), memory, speed."""
    rows = meta["blocks"]
    tenth = rows[max(0, len(rows) // 10 - 1)]["rss_mib"]
    return {
        "model": ctx.config["model"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "steps": total,
        "updates": total // ctx.config["learner"]["window"],
        "stream_online_bpb": sum(r["online_bpb"] for r in rows) / len(rows),
        "stream_frozen_bpb": sum(r["frozen_bpb"] for r in rows) / len(rows),
        "stream_gain_bpb": sum(r["frozen_bpb"] - r["online_bpb"] for r in rows) / len(rows),
        "last_block_online_bpb": rows[-1]["online_bpb"],
        "last_block_frozen_bpb": rows[-1]["frozen_bpb"],
        "rss_first_report_mib": rows[0]["rss_mib"],
        "rss_after_first_tenth_mib": tenth,
        "rss_end_mib": rows[-1]["rss_mib"],
        "rss_growth_after_first_tenth_mib": rows[-1]["rss_mib"] - tenth,
        "wall_seconds": meta["wall_seconds"],
        "bytes_per_second": total / meta["wall_seconds"],
        "blocks": rows,
        "runs": meta["runs"],
    }


def stream_part(ctx, stream: bytes, held: bytes, retention: bytes) -> dict[str, Any]:
    """The new text, read once while learning; held-out and retention bits/byte before and after."""
    done_file = ctx.run_dir / "stream" / "result.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    ev, sc = ctx.config["eval"], ctx.config["stream"]

    def measure(m: torch.nn.Module) -> dict[str, float]:
        return {
            "heldout_bpb": bits_per_byte(m, held, streams=ev["streams"], seq=ev["seq"]),
            "retention_bpb": bits_per_byte(m, retention, streams=ev["streams"], seq=ev["seq"]),
        }

    r = online_pass(ctx, "stream", stream, sc["bytes"], sc, before=measure)
    model, meta = r["model"], r["meta"]
    after = measure(model)
    result = summary(ctx, model, meta, sc["bytes"])
    result.update(
        before=meta["before"],
        after=after,
        heldout_gain_bpb=meta["before"]["heldout_bpb"] - after["heldout_bpb"],
        retention_change_bpb=after["retention_bpb"] - meta["before"]["retention_bpb"],
    )
    write_weights(model, ctx.run_dir / "stream" / "model.safetensors")
    write_json(done_file, result)  # "done" is recorded last, once the weights are complete
    return result


def dynamic_eval_part(ctx) -> dict[str, Any]:
    """Dynamic evaluation (Krause et al. 2018) of the published model on byte_lm v1's own held-out split: one
    stream through it, every byte scored before the model learns from it (as adaptive compressors work), beside
    the frozen model reading the same stream."""
    done_file = ctx.run_dir / "dynamic_eval" / "result.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    dc = ctx.config["dynamic_eval"]
    held, info = load_byte_lm_heldout(ctx, dc["data"])
    total = (len(held) - 1) // dc["report_every"] * dc["report_every"]
    r = online_pass(ctx, "dynamic_eval", held, total, dc)
    result = summary(ctx, r["model"], r["meta"], total)
    result["data"] = info
    write_json(done_file, result)
    return result


def load_byte_lm_heldout(ctx, cfg: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """byte_lm v1's held-out split: the last ``heldout_fraction`` of the raw ``diatheke`` dump (sha256 pinned)."""
    path = _text_path(ctx, cfg, sections=False)
    hf_cache = ctx.root / "experiments" / ".data" / "hf-datasets"
    text, digest = read_text(path, hf_cache, sha256=cfg.get("sha256", ""), who="online_bytelm")
    held = text[-round(len(text) * cfg["heldout_fraction"]) :]
    return held, {"source": cfg.get("describe", str(path)), "sha256": digest, "heldout_bytes": len(held)}


# --------------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    d, r, prov = results["data"], results["stream"], results["provenance"]
    lc = results["config"]["learner"]
    b, a = r["before"], r["after"]
    lines = [
        *table_header(results, "online_bytelm"),
        f"`{r['model']}` ({r['num_parameters']:,} parameters, trained on the Treasury of David) reads "
        f"{r['steps']:,} bytes of new text ({d['source']}, sha256 `{d['sha256'][:12]}`; {d['license']}) once, "
        f"one byte per step, learning online with `tt.online.TruncatedLearner` (window {lc['window']} bytes, "
        f"{r['updates']:,} updates, AdamW lr {lc['lr']}). Held-out: {d['heldout_bytes']:,} bytes "
        f"({d['heldout']}), never streamed. Retention: the first {d['retention_bytes']:,} bytes of the Treasury "
        "of David (training text of the model).",
        "",
        "| bits/byte | before (published weights) | after the online pass |",
        "|---|---:|---:|",
        f"| new text, held-out | {b['heldout_bpb']:.3f} | **{a['heldout_bpb']:.3f}** |",
        f"| new text, the stream itself (prequential: each byte scored before it is learned) | "
        f"{r['stream_frozen_bpb']:.3f} (frozen) | **{r['stream_online_bpb']:.3f}** (online) |",
        f"| new text, last {results['config']['stream']['report_every']:,} bytes of the stream | "
        f"{r['last_block_frozen_bpb']:.3f} (frozen) | {r['last_block_online_bpb']:.3f} (online) |",
        f"| old text (retention) | {b['retention_bpb']:.3f} | {a['retention_bpb']:.3f} |",
    ]
    for name, v in results["baselines_bpb"].items():
        lines.append(f"| stdlib `{name}` on the held-out bytes alone | {v:.3f} | - |")
    if "dynamic_eval" in results:
        de = results["dynamic_eval"]
        lines += [
            "",
            f"Dynamic evaluation on byte_lm v1's own held-out split ({de['data']['source']}, the first "
            f"{de['steps']:,} of its {de['data']['heldout_bytes']:,} bytes, one stream from zero states): the same "
            "learner reads it once, scoring every byte before learning from it, as adaptive compressors do.",
            "",
            "| byte_lm v1 held-out split | bits/byte |",
            "|---|---:|",
            f"| published weights, frozen (static evaluation) | {de['stream_frozen_bpb']:.3f} |",
            f"| learning online while reading (dynamic evaluation) | **{de['stream_online_bpb']:.3f}** |",
            f"| last {results['config']['dynamic_eval']['report_every']:,} bytes: frozen / online | "
            f"{de['last_block_frozen_bpb']:.3f} / {de['last_block_online_bpb']:.3f} |",
        ]
    lines += [
        "",
        f"Memory (resident set of the whole process): {r['rss_first_report_mib']:.1f} MiB at the first report, "
        f"{r['rss_after_first_tenth_mib']:.1f} MiB after the first tenth, {r['rss_end_mib']:.1f} MiB after "
        f"{r['steps']:,} steps: growth **{r['rss_growth_after_first_tenth_mib']:+.2f} MiB** after the first tenth. "
        f"Speed: {r['bytes_per_second']:,.0f} bytes/s (learning and the frozen model's scoring together), "
        f"{r['wall_seconds'] / 60:.1f} min.",
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``stream.png``: prequential bits/byte (online vs frozen) and resident memory along the stream."""
    import matplotlib.pyplot as plt

    rows = results["stream"]["blocks"]
    x = [row["bytes"] for row in rows]
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot(x, [row["frozen_bpb"] for row in rows], "o-", ms=3, label="frozen (published weights)")
    ax.plot(x, [row["online_bpb"] for row in rows], "o-", ms=3, label="learning online")
    r = results["stream"]
    ax.axhline(r["after"]["heldout_bpb"], color="C1", ls=":", lw=1, label="held-out, after")
    ax.axhline(r["before"]["heldout_bpb"], color="C0", ls=":", lw=1, label="held-out, before")
    ax.set_xlabel("bytes read (= steps)")
    ax.set_ylabel("bits per byte (per block)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    mx.plot(x, [row["rss_mib"] for row in rows], "o-", ms=3, color="C2", label="new text, 1 pass")
    top = max(row["rss_mib"] for row in rows)
    if "dynamic_eval" in results:
        d_rows = results["dynamic_eval"]["blocks"]
        mx.plot([row["bytes"] for row in d_rows], [row["rss_mib"] for row in d_rows], "s-", ms=3, color="C3",
                label="dynamic evaluation (own held-out split)")  # fmt: skip
        top = max(top, *(row["rss_mib"] for row in d_rows))
        mx.legend(fontsize=8, loc="lower right")
    mx.set_ylim(0, top * 1.3 + 1)
    mx.set_xlabel("bytes read (= steps)")
    mx.set_ylabel("resident memory (MiB)")
    mx.grid(alpha=0.3)
    fig.suptitle(f"online_bytelm {results['version']}: one pass over new text, learning online")
    fig.tight_layout()
    save_figure(fig, out / "stream.png")
