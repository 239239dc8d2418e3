"""Streaming generation from a byte LM: bytes per second (single stream) and memory over a long run.

    python benchmarks/bytelm_stream.py                           # the default zoo model, 1,000,000 bytes
    python benchmarks/bytelm_stream.py --bytes 20000 --quick     # a short check (results/quick/)
    python benchmarks/bytelm_stream.py --model hf-hub:owner/name@rev --threads 2

Generation runs the way ``tracetorch-zoo generate`` runs it (``stream_bytes``: sampled at temperature 0.8, one
byte per step, batch 1, no gradient). Every ``--every`` bytes it records the elapsed time and the process's
resident memory (``/proc/self/statm``); the result says whether memory stayed flat (the growth from the first
tenth of the run to the end) and the throughput after a warm-up. Then, from the same starting snapshot:

* batched generation (``stream_batch``, ``--batches``): bytes/s per stream and in all, ``--batch-steps`` steps each;
* training throughput of the same architecture as ``byte_lm`` trains it (batch 32 x 256 bytes, truncated BPTT,
  AdamW, clipping; ``--train-steps`` steps): bytes/s, and the share of the machine's matmul peak it uses (``6 N``
  FLOPs per byte for N parameters, against a large ``torch.mm`` timed on the same threads).

Writes ``results/bytelm_stream.{json,md,png}`` with the machine's description.
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
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 4, 16, 64], help="stream_batch sizes to time")
    ap.add_argument("--batch-steps", type=int, default=2000, help="bytes per stream for each batch size")
    ap.add_argument("--train-steps", type=int, default=8, help="training steps timed (after 2 warm-up steps)")
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
    start = {k: None if v is None else v.clone() for k, v in model.get_states().items()}
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
        "batched": [time_batch(model, start, b, args) for b in args.batches],
        "training": time_training(model, args),
    }
    out = HERE / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bytelm_stream.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report(result, out))
    return 0


def time_batch(model, start: dict, batch: int, args) -> dict:
    """``stream_batch`` with ``batch`` streams from the starting snapshot: bytes/s per stream and in all."""
    model.load_states({k: None if v is None else v.clone() for k, v in start.items()})
    gen = torch.Generator().manual_seed(args.seed)
    steps = model.stream_batch([b"\n"] * batch, max_bytes=args.batch_steps + 100, temperature=args.temperature,
                               generator=gen)  # fmt: skip
    for _ in range(100):
        next(steps)
    t0 = time.perf_counter()
    for _ in steps:
        pass
    seconds = time.perf_counter() - t0
    per_stream = args.batch_steps / seconds
    print(f"batch {batch}: {per_stream:,.0f} B/s per stream, {per_stream * batch:,.0f} B/s in all", file=sys.stderr)
    model.load_states({k: None if v is None else v.clone() for k, v in start.items()})
    return {"batch": batch, "steps": args.batch_steps, "bytes_per_second_per_stream": per_stream,
            "bytes_per_second_total": per_stream * batch}  # fmt: skip


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> float:
    """The best float32 ``torch.mm`` rate of an ``n x n`` by ``n x n`` product on this process's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def time_training(model, args, batch: int = 32, seq: int = 256) -> dict:
    """Training steps of a fresh copy of the model as ``byte_lm`` trains it (truncated BPTT over ``seq`` bytes of
    ``batch`` streams, AdamW, gradient clipping): bytes/s and the share of the matmul peak (6 N FLOPs per byte)."""
    import copy

    net = copy.deepcopy(model).train()
    net.zero_states()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    data = torch.randint(0, 256, (args.train_steps + 2, seq + 1, batch), generator=gen)
    times = []
    for i in range(args.train_steps + 2):
        t0 = time.perf_counter()
        net.detach_states()
        logits = net.scan(data[i, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), data[i, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    per_step = sorted(times[2:])[len(times[2:]) // 2]
    rate = batch * seq / per_step
    params = sum(p.numel() for p in net.parameters())
    peak = matmul_peak_gflops()
    share = 6 * params * rate / (peak * 1e9)
    print(f"training: {rate:,.0f} B/s, {100 * share:.1f}% of the {peak:.0f} GFLOP/s matmul peak", file=sys.stderr)
    return {"batch": batch, "seq": seq, "steps": args.train_steps, "seconds_per_step": per_step,
            "bytes_per_second": rate, "matmul_peak_gflops": peak, "share_of_matmul_peak": share}  # fmt: skip


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
    if result.get("batched"):
        md += ["## Batched generation (`stream_batch`)", "",
               "Every stream starts from the same snapshot and prompt and samples on its own; bytes/s measured over "
               f"{result['batched'][0]['steps']:,} bytes per stream.", "",
               "| streams | bytes/s per stream | bytes/s in all |", "|---|---|---|"]  # fmt: skip
        md += [f"| {b['batch']} | {b['bytes_per_second_per_stream']:,.0f} | {b['bytes_per_second_total']:,.0f} |"
               for b in result["batched"]]  # fmt: skip
        md.append("")
    tr = result.get("training")
    if tr:
        md += ["## Training throughput", "",
               f"A fresh copy of the model trained as `byte_lm` trains it: {tr['batch']} streams x {tr['seq']} bytes "
               "per step, truncated BPTT, AdamW, gradient clipping; median of "
               f"{tr['steps']} steps after 2 warm-up steps, {result['threads']} threads.", "",
               "| bytes/s | seconds per step | share of the matmul peak |", "|---|---|---|",
               f"| {tr['bytes_per_second']:,.0f} | {tr['seconds_per_step']:.3f} | "
               f"{100 * tr['share_of_matmul_peak']:.1f}% "
               f"of {tr['matmul_peak_gflops']:.0f} GFLOP/s (6 N FLOPs per byte, N = {result['num_parameters']:,}; "
               "the peak: the best 1024 x 1024 float32 `torch.mm`) |", ""]  # fmt: skip
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
