"""Streaming generation from a byte LM: bytes per second (single stream) and memory over a long run.

    python benchmarks/bytelm_stream.py                           # the default zoo model, 1,000,000 bytes
    python benchmarks/bytelm_stream.py --bytes 20000 --quick     # a short check (results/quick/)
    python benchmarks/bytelm_stream.py --model hf-hub:owner/name@rev --threads 2

Generation runs the way ``tracetorch-zoo generate`` runs it (``stream_bytes``: sampled at temperature 0.8, one
byte per step, batch 1, no gradient). Every ``--every`` bytes it records the elapsed time and the process's
resident memory (``/proc/self/statm``); the result says whether memory stayed flat (the growth from the first
tenth of the run to the end) and the throughput after a warm-up. Writes
``results/bytelm_stream.{json,md,png}`` with the machine's description.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def retain_freed_memory() -> None:
    """As the zoo CLI does: keep freed heap memory instead of returning it to the OS (glibc)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)
        libc.mallopt(-1, 1 << 30)
    except (OSError, AttributeError):
        pass


def machine() -> dict[str, object]:
    """The machine and versions a benchmark result records."""
    import tracetorch as tt

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "tracetorch": tt.__version__,
        "python": platform.python_version(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bytelm-mamba.small", help="registry name, hf-hub id or directory")
    ap.add_argument("--states", default="preamble", help="snapshot to start from ('' for zero states)")
    ap.add_argument("--bytes", type=int, default=1_000_000)
    ap.add_argument("--every", type=int, default=10_000, help="bytes between samples of time and memory")
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="write to results/quick/ (git-ignored)")
    ap.add_argument("--replot", action="store_true", help="only redraw the report and plot from the saved JSON")
    args = ap.parse_args()
    if args.replot:
        out = HERE / "results" / ("quick" if args.quick else "")
        print(report(json.loads((out / "bytelm_stream.json").read_text()), out))
        return 0

    import tracetorch_zoo as zoo

    retain_freed_memory()
    torch.set_num_threads(args.threads)
    model = zoo.load(args.model, states=args.states or None)
    gen = torch.Generator().manual_seed(args.seed)
    stream = model.stream_bytes(b"\n", max_bytes=args.bytes + args.warmup, temperature=args.temperature, generator=gen)
    for _ in range(args.warmup):
        next(stream)
    samples = [{"bytes": 0, "seconds": 0.0, "rss": rss_bytes()}]
    t0 = time.perf_counter()
    n = 0
    with torch.no_grad():
        for _ in stream:
            n += 1
            if n % args.every == 0 or n == args.bytes:
                samples.append({"bytes": n, "seconds": time.perf_counter() - t0, "rss": rss_bytes()})
                last = samples[-1]
                print(f"\r{n:,} bytes  {n / last['seconds']:,.0f} B/s  rss {last['rss'] / 2**20:.1f} MiB", end="",
                      file=sys.stderr, flush=True)  # fmt: skip
    print(file=sys.stderr)
    total = samples[-1]["seconds"]
    tenth = samples[max(1, len(samples) // 10)]
    growth = samples[-1]["rss"] - tenth["rss"]
    result = {
        "model": args.model,
        "states": args.states,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "bytes": n,
        "threads": args.threads,
        "temperature": args.temperature,
        "bytes_per_second": n / total,
        "rss_start_mib": samples[0]["rss"] / 2**20,
        "rss_end_mib": samples[-1]["rss"] / 2**20,
        "rss_growth_after_first_tenth_mib": growth / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples": samples,
        "machine": machine(),
    }
    out = HERE / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bytelm_stream.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report(result, out))
    return 0


def report(result: dict, out: Path) -> str:
    """Write ``bytelm_stream.md`` and ``bytelm_stream.png`` for ``result`` into ``out``; returns the markdown."""
    n, samples = result["bytes"], result["samples"]
    md = [
        "# Byte LM streaming (generated by benchmarks/bytelm_stream.py; do not edit)",
        "",
        f"`{result['model']}` ({result['num_parameters']:,} parameters), snapshot `{result['states'] or 'none'}`, one "
        f"stream, {result['threads']} threads, temperature {result['temperature']}, on {result['machine']['cpu']} "
        f"({result['machine']['cores']} cores), torch {result['machine']['torch']}.",
        "",
        "| goal | target | measured |",
        "|---|---|---|",
        f"| single-stream generation speed | >= 1,000 bytes/s | {result['bytes_per_second']:,.0f} bytes/s |",
        f"| memory flat over {n:,} bytes | no growth | RSS {result['rss_start_mib']:.1f} -> "
        f"{result['rss_end_mib']:.1f} MiB ({result['rss_growth_after_first_tenth_mib']:+.2f} MiB after the first "
        "tenth) |",
        "",
        "![resident memory and speed along the stream](bytelm_stream.png)",
        "",
    ]
    text = "\n".join(md)
    (out / "bytelm_stream.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return text
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    xs = [s["bytes"] for s in samples]
    rss = [s["rss"] / 2**20 for s in samples]
    ax[0].plot(xs, rss, marker=".", label=f"resident set ({result['rss_growth_after_first_tenth_mib']:+.2f} MiB)")
    ax[0].set(xlabel="bytes generated", ylabel="MiB", title="memory")
    ax[0].set_ylim(0, max(rss) * 1.2)  # explicit: a flat line would otherwise sit on the autoscaled frame's edge
    ax[0].legend(loc="lower right", fontsize="small")
    rates = [(b["bytes"] - a["bytes"]) / (b["seconds"] - a["seconds"]) for a, b in itertools.pairwise(samples)]
    ax[1].plot(xs[1:], rates, label="bytes/s over each sample")
    ax[1].axhline(1000, color="gray", ls="--", lw=0.8, label="target 1,000 bytes/s")
    ax[1].set(xlabel="bytes generated", ylabel="bytes/s", title="speed")
    ax[1].set_ylim(0, max(rates) * 1.35)  # room above the curve for the legend
    ax[1].legend(loc="upper right", fontsize="small", ncols=2)
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bytelm_stream.png", dpi=110)
    plt.close(fig)
    return text


if __name__ == "__main__":
    raise SystemExit(main())
