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
import hashlib
import json
import lzma
import math
import os
import re
import resource
import shutil
import subprocess
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
from ttexp.results import write_json

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


def _sword_dump(cfg: dict[str, Any], cache: Path) -> Path:
    """Dump and de-duplicate a SWORD module once (``apt-get install diatheke <package>``)."""
    path = cache / f"{cfg['module'].lower()}-sections.txt"
    if path.is_file():
        return path
    if shutil.which("diatheke") is None:
        raise SystemExit(
            f"online_bytelm: the text comes from the SWORD module {cfg['module']!r} via diatheke, which is not "
            f"installed. Install it with: apt-get install diatheke {cfg['package']}  (Debian packages), or run "
            "the smoke variant, which uses a shipped excerpt."
        )
    cache.mkdir(parents=True, exist_ok=True)
    raw = subprocess.run(
        ["diatheke", "-b", cfg["module"], "-f", "plain", "-k", cfg["key"]], capture_output=True, check=True
    ).stdout
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(sword_sections(raw.decode("utf-8")))
    os.replace(tmp, path)
    return path


def load_text(ctx) -> tuple[bytes, bytes, bytes, dict[str, Any]]:
    """``(stream, heldout, retention, info)``: the bytes streamed once, the held-out tail of the same text, and
    text the model was trained on. Loaded through ``datasets`` from local files."""
    import datasets

    cfg = ctx.config["data"]
    cache = ctx.root / "experiments" / ".data"
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files: nothing to fetch

    def read(path: Path) -> bytes:
        ds = datasets.load_dataset(
            "text", data_files={"t": str(path)}, sample_by="document", cache_dir=str(cache / "hf-datasets")
        )
        return "".join(ds["t"]["text"]).encode("utf-8")

    path = _sword_dump(cfg, cache) if cfg["source"] == "sword" else ctx.root / cfg["path"]
    text = read(path)
    digest = hashlib.sha256(text).hexdigest()
    if cfg.get("sha256") and digest != cfg["sha256"]:
        raise SystemExit(
            f"online_bytelm: {path} has sha256 {digest}, the config pins {cfg['sha256']} (another package version?). "
            "Delete the file to re-dump it, or make a new experiment version for the new data."
        )
    n_held = round(len(text) * cfg["heldout_fraction"])
    sc = ctx.config["stream"]
    if sc["bytes"] + 1 > len(text) - n_held:
        raise SystemExit(
            f"online_bytelm: stream.bytes {sc['bytes']:,} > the {len(text) - n_held - 1:,} bytes available"
        )
    stream, held = text[: sc["bytes"] + 1], text[-n_held:]
    retention = read(ctx.root / cfg["retention_path"])[: cfg["retention_bytes"]]
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
    return ["stream"]


def run(ctx) -> dict[str, Any] | None:
    torch.manual_seed(ctx.seed)
    stream, held, retention, info = load_text(ctx)
    done_file = ctx.run_dir / "stream" / "result.json"
    if ctx.wants("stream"):
        result = stream_pass(ctx, stream, held, retention)
    elif done_file.is_file():
        result = json.loads(done_file.read_text())
    else:
        result = {}
    if not result:
        print("online_bytelm: the stream is not finished yet; results are written once it is")
        return None
    return {"data": info, "baselines_bpb": compressor_baselines(held), "stream": result}


def stream_pass(ctx, stream: bytes, held: bytes, retention: bytes) -> dict[str, Any]:
    """Read ``stream`` once, learning online; resumes from the last checkpoint. Returns the part's results."""
    sc, lc, ev = ctx.config["stream"], ctx.config["learner"], ctx.config["eval"]
    out_dir = ctx.run_dir / "stream"
    done_file = out_dir / "result.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    if sc["block"] % lc["window"] or sc["report_every"] % sc["block"] or sc["bytes"] % sc["report_every"]:
        raise SystemExit("online_bytelm: need window | block | report_every | bytes")
    model = zoo.load(ctx.config["model"]).to(ctx.device)
    frozen = copy.deepcopy(model).eval()  # the published weights, reading the same bytes without learning
    for p in frozen.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lc["lr"], betas=tuple(lc["betas"]), weight_decay=lc["weight_decay"])
    learner = tt.online.TruncatedLearner(
        model, opt, F.cross_entropy, window=lc["window"], clip_grad_norm=lc.get("clip")
    )
    ckpt = Checkpointer(out_dir / "checkpoints")
    both = torch.nn.ModuleDict({"model": model, "frozen": frozen})  # weights and hidden states of both, atomically
    meta: dict[str, Any] = {"pos": 0, "blocks": [], "runs": [], "wall_seconds": 0.0}
    latest = ckpt.latest()
    if latest is not None:
        meta = ckpt.load(latest, both, opt)["extra"]
        if meta["config_hash"] != ctx.config.hash:
            raise SystemExit(f"online_bytelm: {ckpt.path(latest)} was made with another config; delete {out_dir}")
        learner.num_steps, learner.num_updates = meta["pos"], meta["pos"] // lc["window"]
    else:
        meta["before"] = {
            "heldout_bpb": bits_per_byte(model, held, streams=ev["streams"], seq=ev["seq"]),
            "retention_bpb": bits_per_byte(model, retention, streams=ev["streams"], seq=ev["seq"]),
        }
    meta["config_hash"] = ctx.config.hash
    meta["runs"].append({"start_byte": meta["pos"], **ctx.provenance()})
    data = torch.frombuffer(bytearray(stream), dtype=torch.uint8).long().unsqueeze(-1)  # [bytes + 1, 1]
    block, total = sc["block"], sc["bytes"]
    acc = {"online": 0.0, "frozen": 0.0, "n": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=meta["pos"], unit="B", unit_scale=True, desc="online_bytelm", mininterval=2)
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
    after = {
        "heldout_bpb": bits_per_byte(model, held, streams=ev["streams"], seq=ev["seq"]),
        "retention_bpb": bits_per_byte(model, retention, streams=ev["streams"], seq=ev["seq"]),
    }
    rows = meta["blocks"]
    tenth = rows[max(0, len(rows) // 10 - 1)]["rss_mib"]
    result = {
        "model": ctx.config["model"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "before": meta["before"],
        "after": after,
        "stream_online_bpb": sum(r["online_bpb"] for r in rows) / len(rows),
        "stream_frozen_bpb": sum(r["frozen_bpb"] for r in rows) / len(rows),
        "stream_gain_bpb": sum(r["frozen_bpb"] - r["online_bpb"] for r in rows) / len(rows),
        "heldout_gain_bpb": meta["before"]["heldout_bpb"] - after["heldout_bpb"],
        "retention_change_bpb": after["retention_bpb"] - meta["before"]["retention_bpb"],
        "last_block_online_bpb": rows[-1]["online_bpb"],
        "last_block_frozen_bpb": rows[-1]["frozen_bpb"],
        "steps": total,
        "updates": total // lc["window"],
        "rss_first_report_mib": rows[0]["rss_mib"],
        "rss_after_first_tenth_mib": tenth,
        "rss_end_mib": rows[-1]["rss_mib"],
        "rss_growth_after_first_tenth_mib": rows[-1]["rss_mib"] - tenth,
        "wall_seconds": meta["wall_seconds"],
        "bytes_per_second": total / meta["wall_seconds"],
        "blocks": rows,
        "runs": meta["runs"],
    }
    write_json(done_file, result)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    return result


# --------------------------------------------------------------------------------------------------- reporting
def table(results: dict[str, Any]) -> str:
    d, r, prov = results["data"], results["stream"], results["provenance"]
    lc = results["config"]["learner"]
    b, a = r["before"], r["after"]
    lines = [
        f"# online_bytelm {results['version']}" + (f" ({results['variant']})" if results["variant"] else ""),
        "",
        "Generated from `results.json` by `python -m ttexp table online_bytelm "
        f"{results['version']}`; do not edit. Command: `{results['command']}`.",
        "",
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
    lines += [
        "",
        f"Memory (resident set of the whole process): {r['rss_first_report_mib']:.1f} MiB at the first report, "
        f"{r['rss_after_first_tenth_mib']:.1f} MiB after the first tenth, {r['rss_end_mib']:.1f} MiB after "
        f"{r['steps']:,} steps: growth **{r['rss_growth_after_first_tenth_mib']:+.2f} MiB** after the first tenth. "
        f"Speed: {r['bytes_per_second']:,.0f} bytes/s (learning and the frozen model's scoring together), "
        f"{r['wall_seconds'] / 60:.1f} min.",
        "",
        f"Provenance: git {prov['git']['sha']}{' (dirty)' if prov['git']['dirty'] else ''}, config "
        f"{prov['config_hash']}, seed {prov['seed']}, {prov['device']}, {prov['threads']} threads, torch "
        f"{prov['versions']['torch']}, {prov['time']}.",
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
    mx.plot(x, [row["rss_mib"] for row in rows], "o-", ms=3, color="C2")
    mx.set_ylim(0, max(row["rss_mib"] for row in rows) * 1.3 + 1)
    mx.set_xlabel("bytes read (= steps)")
    mx.set_ylabel("resident memory (MiB)")
    mx.grid(alpha=0.3)
    fig.suptitle(f"online_bytelm {results['version']}: one pass over new text, learning online")
    fig.tight_layout()
    fig.savefig(out / "stream.png", dpi=120)
    plt.close(fig)
