"""Memory of online learning over a long stream: does a learning step cost more after a million steps?

    python benchmarks/online_memory.py                      # the byte LM learning online, 1,000,000 steps
    python benchmarks/online_memory.py --bytes 50000 --quick

The zoo's byte LM learns online with ``tt.online.TruncatedLearner`` (window 250 bytes, AdamW, as the
``online_bytelm`` experiment) while it reads a text one byte per step, batch 1; ``learner.learn`` takes 10,000
bytes per call. Every ``--every`` steps the benchmark records the process's resident set (``/proc/self/statm``)
and glibc's own accounting (``mallinfo2``): the heap in use (live allocations) and the heap's size (live + free
chunks it keeps). The allocator keeps freed memory (as the zoo CLI and the experiment runner configure it), so
the resident set is a high-water mark that can step up when free chunks are too fragmented for a request; the
heap in use is what the learner holds. Writes ``results/online_memory.{json,md,png}``.

The text: ``--text PATH`` (default: the de-duplicated Matthew Henry commentary that ``online_bytelm`` dumps to
``experiments/.data/mhcc-sections.txt``; any file works, it is read as bytes and repeated if too short).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bytelm_stream import machine, retain_freed_memory, rss_bytes

HERE = Path(__file__).resolve().parent
DEFAULT_TEXT = HERE.parent / "experiments" / ".data" / "mhcc-sections.txt"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None


def sample(libc) -> dict[str, float]:
    row = {"rss_mib": rss_bytes() / 2**20}
    if libc is not None:
        m = libc.mallinfo2()
        row["heap_in_use_mib"] = (m.uordblks + m.hblkhd) / 2**20  # live small/large allocations + mmapped blocks
        row["heap_size_mib"] = (m.arena + m.hblkhd) / 2**20  # what the allocator holds, free chunks included
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bytelm-mamba.small")
    ap.add_argument("--text", default=str(DEFAULT_TEXT))
    ap.add_argument("--bytes", type=int, default=1_000_000, help="steps (one byte each)")
    ap.add_argument("--every", type=int, default=50_000)
    ap.add_argument("--block", type=int, default=10_000, help="bytes per learner.learn call")
    ap.add_argument("--window", type=int, default=250)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="write to results/quick/ (git-ignored)")
    args = ap.parse_args()
    if args.every % args.block or args.block % args.window:
        ap.error("need window | block | every")
    text_path = Path(args.text)
    if not text_path.is_file():
        ap.error(f"{text_path} does not exist: run the online_bytelm smoke or full experiment once, or pass --text")

    import tracetorch as tt
    import tracetorch_zoo as zoo

    libc = _libc()
    retain_freed_memory()  # as the zoo CLI and ttexp do
    torch.set_num_threads(args.threads)
    raw = text_path.read_bytes()
    raw = raw * (args.bytes // len(raw) + 1)
    data = torch.frombuffer(bytearray(raw[: args.bytes + 1]), dtype=torch.uint8).long().unsqueeze(-1)
    model = zoo.load(args.model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    learner = tt.online.TruncatedLearner(model, opt, F.cross_entropy, window=args.window, clip_grad_norm=1.0)
    rows = []
    t0 = time.perf_counter()
    loss_sum = 0.0
    for pos in range(0, args.bytes, args.block):
        x, y = data[pos : pos + args.block], data[pos + 1 : pos + args.block + 1]
        logits = learner.learn(x, y)
        with torch.no_grad():
            loss_sum += F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), reduction="sum").item()
        n = pos + args.block
        if n % args.every == 0:
            row = {"steps": n, "seconds": time.perf_counter() - t0, "bpb": loss_sum / args.every / 0.6931471805599453}
            row.update(sample(libc))
            loss_sum = 0.0
            rows.append(row)
            print(f"\r{n:,} steps  rss {row['rss_mib']:.1f} MiB  heap in use {row.get('heap_in_use_mib', 0):.1f} MiB",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
    print(file=sys.stderr)
    first = rows[0]
    result = {
        "model": args.model,
        "text": text_path.name,
        "steps": args.bytes,
        "window": args.window,
        "block": args.block,
        "threads": args.threads,
        "steps_per_second": args.bytes / rows[-1]["seconds"],
        "rows": rows,
        "growth_from_first_sample_mib": {
            k: rows[-1][k] - first[k] for k in ("rss_mib", "heap_in_use_mib", "heap_size_mib") if k in first
        },
        "max_minus_min_after_first_sample_mib": {
            k: max(r[k] for r in rows) - min(r[k] for r in rows) for k in ("rss_mib", "heap_in_use_mib") if k in first
        },
        "machine": machine(),
    }
    out = HERE / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "online_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    g = result["growth_from_first_sample_mib"]
    md = [
        "# Online learning memory over a long stream (generated by benchmarks/online_memory.py; do not edit)",
        "",
        f"`{args.model}` learning online with `tt.online.TruncatedLearner` (window {args.window}, AdamW lr {args.lr}) "
        f"on `{text_path.name}`, one byte per step, batch 1, {args.threads} thread(s), {args.bytes:,} steps, on "
        f"{result['machine']['cpu']} ({result['machine']['cores']} cores), torch {torch.__version__}; "
        f"{result['steps_per_second']:,.0f} steps/s.",
        "",
        f"| memory | after {first['steps']:,} steps | after {args.bytes:,} steps | change |",
        "|---|---:|---:|---:|",
    ]
    names = {"heap_in_use_mib": "heap in use (live allocations)", "heap_size_mib": "heap size (live + kept free)",
             "rss_mib": "resident set"}  # fmt: skip
    for k, label in names.items():
        if k in first:
            md.append(f"| {label} | {first[k]:.1f} MiB | {rows[-1][k]:.1f} MiB | {g[k]:+.2f} MiB |")
    md.append("")
    (out / "online_memory.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        xs = [r["steps"] for r in rows]
        for k, label in names.items():
            if k in first:
                ax.plot(xs, [r[k] for r in rows], "o-", ms=3, label=label)
        ax.set(xlabel="steps (bytes read, learning online)", ylabel="MiB", title="memory along the stream")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "online_memory.png", dpi=110)
    except ImportError:
        pass
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
