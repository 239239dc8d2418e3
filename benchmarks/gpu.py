"""The LIF and RNN/SSM workloads of ``run.py`` / ``run_rnn.py`` on a CUDA GPU, every peer in one process.

The CPU suites start one process per measurement in each peer's own venv; a GPU machine has one interpreter
with its own torch, so here the peers' pure-Python packages go on ``PYTHONPATH`` (any that fail to import are
reported as unavailable) and everything runs in this process, in float32, with the same adapters
(``worker.py``, ``worker_rnn.py``) and the same problems, built on the CPU from the same seeds and moved to the
GPU. Times are medians of ``--repeats`` iterations, each bracketed by ``torch.cuda.synchronize()``; peak
memory is ``torch.cuda.max_memory_allocated()`` during one iteration above what was allocated before it.

    python benchmarks/gpu.py [--quick] [--out benchmarks/results/gpu]

Writes ``gpu.json`` and ``gpu.md`` (a table per workload, ratios against our implementation).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import worker as W  # noqa: E402
import worker_rnn as WR  # noqa: E402

from tracetorch.ops.fire.triton import triton_status  # noqa: E402
from tracetorch.ops.selective_scan.triton import triton_scan_status  # noqa: E402

LIF_IMPLS = ["tracetorch-scan", "tracetorch-scan-torch", "tracetorch-steps", "snntorch", "spikingjelly-m",
             "spikingjelly-cupy", "norse"]  # fmt: skip
LIF_STREAM_IMPLS = ["tracetorch", "snntorch", "spikingjelly-s", "norse", "inplace"]
RNN_IMPLS = {
    "lstm": ["tracetorch-scan", "tracetorch-steps", "torch-nn"],
    "mamba": ["tracetorch-scan", "tracetorch-scan-torch", "mambapy"],
}
RNN_STREAM_IMPLS = {"lstm": ["tracetorch", "torch-nn"], "mamba": ["tracetorch", "mambapy"]}


DEVICE = "cuda"  # --device cpu runs the same code on the CPU (to test this script without a GPU)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def sync_time(fn) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def peak_delta(fn) -> int | None:
    if DEVICE != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def version(dist: str | None) -> str | None:
    if dist == "tracetorch-core":
        import tracetorch

        return tracetorch.__version__
    try:
        return md.version(dist) if dist else None
    except md.PackageNotFoundError:
        return None


def without_triton(impl):
    """Our scan on the torch kernels (what runs where Triton is not installed)."""
    from tracetorch.ops import fire
    from tracetorch.ops.selective_scan import triton as triton_scan

    inner = impl.forward

    def forward(x):
        kernels, usable = fire.choose_kernels, triton_scan.usable
        fire.choose_kernels, triton_scan.usable = (lambda cfg, u: None), (lambda u: False)
        try:
            return inner(x)
        finally:
            fire.choose_kernels, triton_scan.usable = kernels, usable

    impl.forward = forward
    return impl


def lif_impl(name: str, prob: dict, workload: str) -> W.Impl:
    if name == "tracetorch-scan-torch":
        return without_triton(W.ADAPTERS["tracetorch-scan"](prob, workload))
    if name == "spikingjelly-cupy":  # SpikingJelly's fused multi-step CUDA kernel (needs cupy)
        import cupy  # noqa: F401

        impl = W.spikingjelly_plif(prob, workload, "m")
        node = impl.reset.__self__
        node.backend = "cupy"
        return impl
    return W.ADAPTERS[name](prob, workload)


def measure_train(impl, x_seq, grad_out, repeats: int, warmup: int) -> dict:
    x = impl.transform_input(x_seq).detach().contiguous().requires_grad_(True)
    bf = getattr(impl, "batch_first", False)
    if bf:
        x = x.detach().transpose(0, 1).contiguous().requires_grad_(True)
        grad_out = grad_out.transpose(0, 1).contiguous()

    def iteration():
        impl.reset()
        x.grad = None
        for p in impl.params:
            p.grad = None
        y = impl.forward(x)
        y.backward(grad_out)
        return y

    for _ in range(warmup):
        iteration()
    times = [sync_time(iteration) for _ in range(repeats)]
    out = {"time_s": statistics.median(times), "min_s": min(times), "peak_bytes": peak_delta(iteration)}
    out["grads_ok"] = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in impl.params)
    return out


def measure_stream(impl, x_pool, repeats: int, steps: int) -> dict:
    xs = [impl.transform_input(x).contiguous() for x in x_pool.unbind(0)]
    per = []
    with torch.no_grad():
        impl.reset()
        for i in range(10):
            impl.step(xs[i % len(xs)])

        def block():
            for i in range(steps):
                impl.step(xs[i % len(xs)])

        per = [sync_time(block) / steps for _ in range(repeats)]
    return {"time_s": statistics.median(per), "min_s": min(per)}


def run_one(rows: list, suite: str, workload: str, impl_name: str, fn) -> None:
    t0 = time.perf_counter()
    row = {"suite": suite, "workload": workload, "impl": impl_name}
    try:
        impl, res = fn()
        row.update(res, dist=impl.dist, version=version(impl.dist), status="ok")
    except ImportError as e:
        row.update(status="unavailable", error=f"{type(e).__name__}: {e}")
    except Exception as e:  # one failing peer must not lose the others' numbers
        row.update(status="failed", error=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-2000:])
    row["wall_s"] = time.perf_counter() - t0
    rows.append(row)
    t = row.get("time_s")
    print(f"[gpu] {suite}/{workload} {impl_name}: {row['status']}" + (f" {t * 1e3:.3f} ms" if t else "")
          + (f" ({row['error']})" if "error" in row else ""), flush=True)  # fmt: skip
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def lif_suite(rows, args) -> None:
    for T in args.T:
        a = argparse.Namespace(seed=0, N=args.N, B=args.B, T=T, workload="train", x_mean=0.15, x_std=0.3)
        with torch.device("cpu"):
            prob = W.make_problem(a)
        prob = {k: v.to(DEVICE) for k, v in prob.items()}
        for name in LIF_IMPLS:

            def go(name=name, prob=prob):
                impl = lif_impl(name, prob, "train")
                return impl, measure_train(impl, prob["x_seq"], prob["grad_out"], args.repeats, args.warmup)

            run_one(rows, "lif", f"train T={T} B={args.B} N={args.N}", name, go)
    a = argparse.Namespace(seed=0, N=args.N, B=args.B, workload="stream", pool=8, x_mean=0.15, x_std=0.3)
    with torch.device("cpu"):
        prob = W.make_problem(a)
    prob = {k: v.to(DEVICE) for k, v in prob.items()}
    for name in LIF_STREAM_IMPLS:

        def go(name=name, prob=prob):
            impl = W.ADAPTERS[name](prob, "stream")
            return impl, measure_stream(impl, prob["x_pool"], args.repeats, args.steps)

        run_one(rows, "lif", f"stream B={args.B} N={args.N}", name, go)


def rnn_suite(rows, args) -> None:
    for model, impls in RNN_IMPLS.items():
        a = argparse.Namespace(seed=0, T=args.rnn_T, B=args.B, D=args.D, d_state=16, d_conv=4, expand=1,
                               model=model, workload="train", pool=8)  # fmt: skip
        with torch.device("cpu"):
            inp = WR.make_inputs(a)
        inp = {k: v.to(DEVICE) for k, v in inp.items()}
        for name in impls:

            def go(name=name, a=a, inp=inp):
                if name == "tracetorch-scan-torch":
                    impl = without_triton(WR.ADAPTERS["tracetorch-scan"](a))
                else:
                    impl = WR.ADAPTERS[name](a)
                return impl, measure_train(impl, inp["x_seq"], inp["grad_out"], args.repeats, args.warmup)

            run_one(rows, model, f"train T={args.rnn_T} B={args.B} D={args.D}", name, go)
    for model, impls in RNN_STREAM_IMPLS.items():
        a = argparse.Namespace(seed=0, B=args.B, D=args.D, d_state=16, d_conv=4, expand=1, model=model,
                               workload="stream", pool=8)  # fmt: skip
        with torch.device("cpu"):
            inp = WR.make_inputs(a)
        inp = {k: v.to(DEVICE) for k, v in inp.items()}
        for name in impls:

            def go(name=name, a=a, inp=inp):
                impl = WR.ADAPTERS[name](a)
                return impl, measure_stream(impl, inp["x_pool"], args.repeats, args.steps)

            run_one(rows, model, f"stream B={args.B} D={args.D}", name, go)


def report(rows: list, meta: dict) -> str:
    lines = ["# GPU benchmarks", "", f"Generated by `python benchmarks/gpu.py` on {meta['gpu']} ({meta['time']}); "
             f"torch {meta['torch']}, CUDA {meta['cuda']}, float32, git {meta['git']}; "
             f"Triton kernels: {meta['triton']}. "
             f"Median of {meta['repeats']} "
             "iterations, each between two `torch.cuda.synchronize()`; peak memory is "
             "`torch.cuda.max_memory_allocated()` during one iteration above what was allocated before it. "
             "'x ours' = this row's time / our fastest row's time in the same table (above 1: slower than ours).",
             ""]  # fmt: skip
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["suite"], r["workload"]), []).append(r)
    for (suite, wl), rs in groups.items():
        ours = [r["time_s"] for r in rs if r["status"] == "ok" and r["impl"].startswith("tracetorch")]
        best = min(ours) if ours else None
        lines += [f"## {suite}: {wl}", "", "| implementation | version | time | x ours | peak memory | note |",
                  "|---|---|---:|---:|---:|---|"]  # fmt: skip
        for r in rs:
            if r["status"] != "ok":
                lines.append(f"| {r['impl']} | | {r['status']} | | | {r['error'][:120]} |")
                continue
            t = r["time_s"]
            tt = f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"
            ratio = f"{t / best:.2f}" if best else ""
            mem = f"{r['peak_bytes'] / 2**20:.1f} MiB" if r.get("peak_bytes") is not None else ""
            note = "" if r.get("grads_ok", True) else "non-finite or missing gradients"
            lines.append(f"| {r['impl']} | {r.get('version') or ''} | {tt} | {ratio} | {mem} | {note} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu.py: no CUDA device")
    q = args.quick
    args.T = [20] if q else [100, 500]
    args.B, args.N, args.D, args.rnn_T = (4, 64, 32, 16) if q else (32, 1024, 256, 512)
    args.repeats, args.warmup, args.steps = (3, 1, 10) if q else (10, 3, 200)
    torch.manual_seed(0)
    torch.set_default_device(DEVICE)  # peers' reset/step code creates tensors without a device
    rows: list = []
    lif_suite(rows, args)
    rnn_suite(rows, args)
    git = os.environ.get("TT_GIT_SHA")  # set by whoever runs this on a machine without the repository's .git
    if not git:
        try:
            sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
            git = sha.stdout.strip() or "unknown"
        except OSError:
            git = "unknown"
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else platform.processor() or "cpu"
    meta = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "git": git,
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "repeats": args.repeats, "quick": q,
            "triton": f"firing {triton_status()}, selective scan {triton_scan_status()}"}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "gpu.md").write_text(report(rows, meta))
    print(report(rows, meta))


if __name__ == "__main__":
    main()
