"""Benchmark driver: the classic LIF neuron in traceTorch vs its peers, every number from one run.

``nox -s bench`` sets up the venvs and calls this script with the bench session's interpreter (which has this
repository's traceTorch installed editable); ``nox -s bench -- --quick`` is a smoke test at tiny sizes.
Every (implementation, workload) pair runs in a fresh process of the venv that holds that implementation
(``worker.py``); the JSON each writes is collected into ``results/results.json`` and rendered as
``results/results.md`` (``results/quick/`` for ``--quick``). Both files are generated: never edit them.
See README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import venvs  # noqa: E402  (benchmarks/venvs.py: where the peer venvs live)

BENCH = "bench"  # the environment running this driver: this repo's traceTorch, torch.compile, plain torch

# Role "ours" is the row the goals are computed for; "peer" rows compete for "fastest peer"; "ours-variant" and
# "reference" rows are shown for context.
S, T, ST = ["stream"], ["train"], ["stream", "train"]
_ROWS = [
    # id, environment, library, role, workloads, API exercised
    ("tracetorch", BENCH, "traceTorch (this repo)", "ours", S, "`layer(x)` per step under `no_grad`"),
    ("tracetorch-ttcompile", BENCH, "traceTorch (this repo)", "ours-variant", S, "`TTcompile()`, then `layer(x)`"),
    ("tracetorch-scan", BENCH, "traceTorch (this repo)", "ours", T, "`layer.scan(x_seq)`"),
    ("tracetorch-steps", BENCH, "traceTorch (this repo)", "ours-variant", T, "step loop of `layer(x)`, stacked"),
    ("snntorch", "snntorch", "snnTorch", "peer", ST, "`snn.Leaky(init_hidden=True)`, `lif(x)` per step"),
    ("spikingjelly-s", "spikingjelly", "SpikingJelly", "peer", ST, "`ParametricLIFNode`, step_mode `s`"),
    ("spikingjelly-m", "spikingjelly", "SpikingJelly", "peer", T, "`ParametricLIFNode`, step_mode `m`"),
    ("norse", "norse", "Norse", "peer", ST, "`LIFBoxCell`, `z, s = cell(x, s)` per step"),
    ("tracetorch-0.16.4", "tracetorch-0.16.4", "traceTorch 0.16.4 (PyPI)", "peer", ST, "`LIB`, `layer(x)` per step"),
    ("tracetorch-0.19.2", "tracetorch-0.19.2", "traceTorch 0.19.2 (PyPI)", "peer", ST, "`LIB`, `layer(x)` per step"),
    (
        "tracetorch-kernels",
        BENCH,
        "traceTorch (this repo)",
        "reference",
        T,
        "the native kernels `scan` launches, alone (replayed)",
    ),
    (
        "tracetorch-torch-kernel",
        BENCH,
        "traceTorch (this repo)",
        "ours-variant",
        T,
        "`layer.scan(x_seq)` on the torch kernels (`TRACETORCH_BACKEND=torch`)",
    ),
    ("torch-compile", BENCH, "torch.compile'd step loop", "reference", ST, "hand-written step, `torch.compile`d"),
    ("inplace", BENCH, "hand-written in-place torch", "reference", S, "3 in-place ops, preallocated buffers"),
]
IMPLS: list[dict] = [
    {"id": i, "env": e, "lib": lib, "role": r, "workloads": w, "api": api} for i, e, lib, r, w, api in _ROWS
]
# implementations that run only the workloads named here (the others run every workload of their kinds)
ONLY = {"tracetorch-kernels": ("train_small",), "tracetorch-torch-kernel": ("train_dual",)}

# name -> (workload kind, sizes, repetition). Sizes of the full run are the ones the goals are stated for.
FULL = {
    "stream": {"workload": "stream", "B": 32, "N": 1024, "warmup": 300, "repeats": 25, "steps": 200},
    "train_T100": {"workload": "train", "T": 100, "B": 32, "N": 1024, "warmup": 3, "repeats": 30},
    "train_T500": {"workload": "train", "T": 500, "B": 16, "N": 4096, "warmup": 2, "repeats": 15},
    # per-call overhead at small sizes: the whole scan call against the kernels it launches (and every peer)
    "train_small": {"workload": "train", "T": 100, "B": 8, "N": 256, "warmup": 10, "repeats": 60},
    # a dual type (two membranes): our native kernels against our torch kernels; no peer has the type
    "train_dual": {"workload": "train", "neuron": "DLIB", "T": 100, "B": 32, "N": 1024, "warmup": 3, "repeats": 30,
                   "impls": ["tracetorch-scan", "tracetorch-torch-kernel"]},
}  # fmt: skip
QUICK = {
    "stream": {"workload": "stream", "B": 32, "N": 1024, "warmup": 20, "repeats": 5, "steps": 50},
    "train_T100": {"workload": "train", "T": 20, "B": 8, "N": 256, "warmup": 2, "repeats": 3},
    "train_T500": {"workload": "train", "T": 50, "B": 4, "N": 512, "warmup": 2, "repeats": 3},
    "train_small": {"workload": "train", "T": 20, "B": 4, "N": 64, "warmup": 2, "repeats": 3},
    "train_dual": {"workload": "train", "neuron": "DLIB", "T": 20, "B": 8, "N": 256, "warmup": 2, "repeats": 3,
                   "impls": ["tracetorch-scan", "tracetorch-torch-kernel"]},
}  # fmt: skip
GOALS = {"stream_vs_peer": 4.0, "stream_vs_bound": 1.5, "train_T100": 3.0, "train_T500": 2.5, "memory": 1.0,
         "overhead": 1.5, "dual": 2.5}  # fmt: skip


def runs(impl: dict, name: str, spec: dict) -> bool:
    """Whether ``impl`` takes part in workload ``name``."""
    if spec["workload"] not in impl["workloads"]:
        return False
    if "impls" in spec and impl["id"] not in spec["impls"]:
        return False
    return name in ONLY.get(impl["id"], (name,))


# How glibc malloc treats freed memory in the workers. "default": as installed; blocks above the mmap threshold
# (at most 32 MiB) are unmapped on free, so every iteration first-touches (page-faults and zeroes) its big
# tensors again. "retain": no mmap, no trimming, so freed memory is reused as a caching allocator (jemalloc,
# tcmalloc, PyTorch's CUDA allocator) would; this isolates the kernels from the kernel's page-zeroing.
MALLOC = {
    "default": {},
    "retain": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 << 30)},
}
MALLOC_TITLE = {
    "default": "glibc malloc defaults",
    "retain": "freed memory retained (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=64 GiB)",
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine_info(threads: int) -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        mem_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    porcelain = sh("git", "status", "--porcelain", "--untracked-files=no")
    core_diff = sh("git", "diff", "HEAD", "--", "packages/tracetorch-core")
    for path in sh("git", "ls-files", "--others", "--exclude-standard", "--", "packages/tracetorch-core").split():
        with contextlib.suppress(OSError):  # new files not yet in git are part of the code being measured too
            core_diff += f"\nnew file {path}\n" + (ROOT / path).read_text(errors="replace")
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu or platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": threads,
        "git_sha": sh("git", "rev-parse", "HEAD"),
        "git_dirty": bool(porcelain),
        # uncommitted changes (and new untracked files) of the library being measured, to tie a result to exact code
        "core_diff_sha256": hashlib.sha256(core_diff.encode()).hexdigest()[:16] if core_diff else None,
    }


def python_for(env: str) -> Path | None:
    if env == BENCH:
        return Path(sys.executable)
    py = venvs.python_of(venvs.VENVS / env)
    return py if py.exists() else None


def run_one(impl: dict, name: str, spec: dict, malloc: str, args, worker: str = "worker.py") -> dict:
    base = {"impl": impl["id"], "workload_name": name, "workload": spec["workload"], "malloc": malloc}
    py = python_for(impl["env"])
    if py is None:
        how = "nox -s bench -- --suite rnn" if worker == "worker_rnn.py" else "nox -s bench"
        return {**base, "ok": False, "error": f"venv for {impl['env']!r} missing: run `{how}` to create it"}
    with tempfile.TemporaryDirectory(prefix="ttbench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [str(py), str(HERE / worker), "--impl", impl["id"], "--threads", str(args.threads)]
        cmd += [f"--{k}={v}" for k, v in spec.items() if k != "impls"]
        if malloc != "default":
            cmd.append("--no-memory")  # peak tensor bytes do not depend on malloc; RSS is reported for defaults
        cmd += ["--out", str(out)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PYTHONPATH"}
        env.update(MALLOC[malloc], OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        if impl["env"] == BENCH and getattr(args, "ours_src", None) is not None:
            env["PYTHONPATH"] = str(args.ours_src)  # shadows the editable install of this repo's core
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {**base, "ok": False, "error": f"timed out after {args.timeout} s"}
        wall = time.perf_counter() - t0
        if not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {**base, "ok": False, "error": f"worker exited {proc.returncode}: {' | '.join(tail)}"}
        res = json.loads(out.read_text())
    res.update(base)
    res["wall_s"] = round(wall, 2)
    return res


# -- report ---------------------------------------------------------------------------------------------------


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def fmt_mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def fmt_ratio(r) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def med(r: dict | None) -> float | None:
    return r["time"]["median"] if r and r.get("ok") and "time" in r else None


ROLE = {i["id"]: i["role"] for i in IMPLS}
LIB = {i["id"]: i["lib"] for i in IMPLS}


def summarize_goals(results: list[dict], bandwidth: dict | None, workloads: dict, mallocs: list[str]) -> list[dict]:
    """One row per goal; each row holds the measured ratio under each malloc mode."""
    by = {(r["workload_name"], r["malloc"], r["impl"]): r for r in results}

    def fastest_peer(name: str, malloc: str) -> tuple[str | None, float | None]:
        cands = [
            (med(r), i) for (w, m, i), r in by.items() if w == name and m == malloc and ROLE[i] == "peer" and med(r)
        ]
        return (min(cands)[1], min(cands)[0]) if cands else (None, None)

    def size(name: str) -> str:
        spec = workloads.get(name, {})
        return ", ".join(f"{k}={spec[k]}" for k in ("T", "B", "N") if k in spec)

    bound = bandwidth["copy_time"]["median"] if bandwidth and bandwidth.get("ok") else None
    goals = []
    if "stream" in workloads:
        row = {
            "what": f"streaming step ({size('stream')}): fastest peer time / our time",
            "target": ">=",
            "threshold": GOALS["stream_vs_peer"],
            "by_malloc": {},
        }
        row2 = {
            "what": f"streaming step ({size('stream')}): our time / bandwidth bound",
            "target": "<=",
            "threshold": GOALS["stream_vs_bound"],
            "by_malloc": {},
        }
        for m in mallocs:
            ours = med(by.get(("stream", m, "tracetorch")))
            peer, peer_t = fastest_peer("stream", m)
            row["by_malloc"][m] = {"value": peer_t / ours if ours and peer_t else None, "peer": peer}
            row2["by_malloc"][m] = {"value": ours / bound if ours and bound else None}
        goals += [row, row2]
    for name in ("train_T100", "train_T500"):
        if name not in workloads:
            continue
        row = {
            "what": f"training ({size(name)}): fastest peer time / our time (`scan`)",
            "target": ">=",
            "threshold": GOALS[name],
            "by_malloc": {},
        }
        for m in mallocs:
            ours = med(by.get((name, m, "tracetorch-scan")))
            peer, peer_t = fastest_peer(name, m)
            row["by_malloc"][m] = {"value": peer_t / ours if ours and peer_t else None, "peer": peer}
        goals.append(row)
    for name in ("train_T100", "train_T500"):
        if name not in workloads:
            continue
        o, c = by.get((name, "default", "tracetorch-scan")), by.get((name, "default", "torch-compile"))
        ob = o.get("peak_alloc_bytes") if o and o.get("ok") else None
        cb = c.get("peak_alloc_bytes") if c and c.get("ok") else None
        goals.append(
            {
                "what": f"training ({size(name)}): our peak tensor memory / torch.compile'd loop's",
                "target": "<=",
                "threshold": GOALS["memory"],
                "by_malloc": {"any": {"value": ob / cb if ob and cb else None}},
            }
        )

    def time_ratio(name: str, what: str, target: str, threshold: float, num: str, den: str) -> None:
        """A goal on ``time(num) / time(den)`` in workload ``name`` under each malloc mode (if it ran)."""
        if name not in workloads:
            return
        row = {"what": what, "target": target, "threshold": threshold, "by_malloc": {}}
        for m in mallocs:
            a, b = med(by.get((name, m, num))), med(by.get((name, m, den)))
            row["by_malloc"][m] = {"value": a / b if a and b else None}
        goals.append(row)

    time_ratio("train_small", f"per-call overhead ({size('train_small')}): our `scan` training call / the kernels "
               "it launches", "<=", GOALS["overhead"], "tracetorch-scan", "tracetorch-kernels")  # fmt: skip
    neuron = workloads.get("train_dual", {}).get("neuron", "DLIB")
    time_ratio("train_dual", f"{neuron} training ({size('train_dual')}): the torch kernels' time / our native "
               "kernels'", ">=", GOALS["dual"], "tracetorch-torch-kernel", "tracetorch-scan")  # fmt: skip
    for g in goals:
        for cell in g["by_malloc"].values():
            v = cell["value"]
            cell["met"] = None if v is None else (v >= g["threshold"] if g["target"] == ">=" else v <= g["threshold"])
    return goals


def _load(avg) -> str:
    return "n/a" if not avg else "/".join(f"{v:.2f}" for v in avg)


def _goal_cell(cell: dict | None) -> str:
    if not cell:
        return "n/a"
    text = fmt_ratio(cell["value"])
    if cell.get("peer"):
        text += f" vs {LIB[cell['peer']]} (`{cell['peer']}`)"
    status = "n/a" if cell["met"] is None else ("met" if cell["met"] else "**not met**")
    return f"{text}: {status}"


def header_lines(title: str, intro: str, meta: dict) -> list[str]:
    """The top of a results.md: title, intro, the machine and the package versions (shared by both suites)."""
    git = f"`{meta['git_sha'][:12]}`"
    if meta["git_dirty"]:
        git += " with uncommitted changes"
    if meta["core_diff_sha256"]:
        git += f" (sha256 of the diff of packages/tracetorch-core: `{meta['core_diff_sha256']}`)"
    if meta.get("ours_src"):
        git += f"; the traceTorch rows measure `{meta['ours_src']}`, not this checkout's core"
    return [
        title,
        "",
        intro,
        "",
        "## Machine and software",
        "",
        "| | |",
        "|---|---|",
        f"| date | {meta['date_utc']} |",
        f"| CPU | {meta['cpu']} ({meta['logical_cpus']} logical CPUs, {meta['usable_cpus']} usable) |",
        f"| memory | {meta['memory_gib']} GiB |",
        f"| OS | {meta['os']} |",
        f"| Python | {meta['python']} |",
        f"| torch | {meta['torch']}; `torch.set_num_threads({meta['torch_threads']})` in every process |",
        f"| git | {git} |",
        f"| run | {'quick' if meta['quick'] else 'full'}, {meta['wall_s']:.0f} s wall in all; load average "
        f"{_load(meta.get('loadavg_start'))} at the start, {_load(meta.get('loadavg_end'))} at the end |",
        "",
        "| package | version | venv |",
        "|---|---|---|",
    ] + [f"| {row['package']} | {row['version']} | {row['venv']} |" for row in meta["versions"]]


def render_md(data: dict) -> str:
    meta, workloads, results, goals = data["meta"], data["workloads"], data["results"], data["goals"]
    mallocs = meta["mallocs"]
    by = {(r["workload_name"], r["malloc"], r["impl"]): r for r in results}
    impls = {i["id"]: i for i in IMPLS}
    if meta["quick"]:
        intro = (
            "Generated by `benchmarks/run.py` (`nox -s bench -- --quick`): tiny sizes, a smoke test; do not edit "
            "and do not quote these numbers. See [benchmarks/README.md](../../README.md)."
        )
    else:
        intro = (
            "Generated by `benchmarks/run.py` (`nox -s bench`); do not edit. Methodology, peer configuration and "
            "every deviation from identical math: [benchmarks/README.md](../README.md)."
        )
    lines = header_lines("# traceTorch benchmark results: the classic LIF neuron", intro, meta)

    cols = [*mallocs]
    lines += [
        "",
        "## Goals (ratios from this run)",
        "",
        "| goal | target | " + " | ".join(f"measured, {MALLOC_TITLE[m].split(' (')[0]}" for m in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for g in goals:
        target = f"{g['target']} {g['threshold']:g}×"
        if "any" in g["by_malloc"]:
            cells = [_goal_cell(g["by_malloc"]["any"])] + ["(same: allocator-independent)"] * (len(cols) - 1)
        else:
            cells = [_goal_cell(g["by_malloc"].get(m)) for m in cols]
        lines.append(f"| {g['what']} | {target} | " + " | ".join(cells) + " |")

    for name, spec in workloads.items():
        stream = spec["workload"] == "stream"
        ours_id = "tracetorch" if stream else "tracetorch-scan"
        for m in mallocs:
            rows = [r for (w, mm, _), r in by.items() if w == name and mm == m]
            if not rows:
                continue
            with_mem = m == "default"
            if stream:
                title = f"Streaming step, inference: B={spec['B']}, N={spec['N']}"
                rep = f"{spec['repeats']} blocks of {spec['steps']} steps after {spec['warmup']} warm-up steps"
                what = "Time per step."
            else:
                neuron = spec.get("neuron", "LIF")
                title = f"BPTT training, {neuron}: T={spec['T']}, B={spec['B']}, N={spec['N']}"
                rep = f"{spec['repeats']} iterations after {spec['warmup']} warm-up"
                what = "Time per iteration: forward, then backward of sum(g · spikes) with g fixed and dense."
            ours_t = med(by.get((name, m, ours_id)))
            lines += [
                "",
                f"## {title}; {MALLOC_TITLE[m]}",
                "",
                f"{what} Median over {rep}, p25–p75 in brackets. '÷ ours' is the row's time divided by ours "
                "(above 1: ours is faster).",
                "",
            ]
            if stream:
                head = ["library", "API", "time / step", "÷ ours", "spike rate"]
                head += ["peak temporary tensor memory (KiB)"] if with_mem else []
            else:
                head = ["library", "API", "time / iteration", "÷ ours", "spike rate", "learnable", "grads"]
                head += ["peak tensor memory (MiB)", "÷ compile'd loop", "peak RSS Δ (MiB)"] if with_mem else []
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            comp = by.get((name, m, "torch-compile"))
            comp_b = comp.get("peak_alloc_bytes") if comp and comp.get("ok") else None
            rows.sort(key=lambda r: (med(r) is None, med(r) or 0))
            for r in rows:
                i = impls[r["impl"]]
                label = (f"**{i['lib']}**" if i["role"] == "ours" else i["lib"]) + f" `{r['impl']}`"
                if not r.get("ok"):
                    err = r.get("error", "failed").replace("|", "/")
                    lines.append(f"| {label} | {i['api']} | failed: {err} |" + " |" * (len(head) - 3))
                    continue
                t = r["time"]
                cells = [
                    label,
                    i["api"],
                    f"{fmt_time(t['median'])} [{fmt_time(t['p25'])}–{fmt_time(t['p75'])}]",
                    fmt_ratio(t["median"] / ours_t) if ours_t else "n/a",
                    f"{100 * r['spike_rate']:.1f}%" + ("" if r.get("binary") else " (not 0/1!)"),
                ]
                if stream:
                    pk = r.get("peak_alloc_bytes")
                    cells += ["n/a" if pk is None else f"{pk / 1024:.0f}"] if with_mem else []
                else:
                    cells += [str(r["n_learnable"]), "ok" if r["grads_ok"] else "**missing/NaN**"]
                    if with_mem:
                        pb = r.get("peak_alloc_bytes")
                        cells += [fmt_mib(pb), fmt_ratio(pb / comp_b) if pb and comp_b else "n/a"]
                        cells += [fmt_mib(r.get("peak_rss_bytes"))]
                lines.append("| " + " | ".join(cells) + " |")
            bw = data.get("bandwidth")
            if stream and bw and bw.get("ok"):
                ct = bw["copy_time"]
                cells = [
                    "*bandwidth bound*",
                    f"one `copy_` moving the step's {bw['bytes_per_step'] // 1024} KiB",
                    f"{fmt_time(ct['median'])} [{fmt_time(ct['p25'])}–{fmt_time(ct['p75'])}]",
                    fmt_ratio(ct["median"] / ours_t) if ours_t else "n/a",
                    "",
                ] + ([""] if with_mem else [])
                lines.append("| " + " | ".join(cells) + " |")
                lines += [
                    "",
                    f"Bandwidth bound: a step must read x, read and write the membrane and write the spikes: "
                    f"{bw['bytes_per_step'] // 1024} KiB in fp32. The bound is that many bytes divided by the "
                    f"bandwidth of `dst.copy_(src)` moving the same bytes over the same working set, "
                    f"{bw['bandwidth_GBps']:.1f} GB/s (this includes one op's call overhead, "
                    f"{fmt_time(bw['tiny_copy_time']['median'])} for a 1-element copy; "
                    f"{bw['bandwidth_GBps_without_call_overhead']:.1f} GB/s without it).",
                ]
    notes = {}
    for r in results:
        if r.get("ok") and r.get("note"):
            notes.setdefault(r["impl"], r["note"])
    if notes:
        lines += ["", "## Configuration echoed by the workers", ""]
        lines += [f"- `{i}`: {n}" for i, n in notes.items()]
    return "\n".join(lines) + "\n"


def parse_cli(
    doc: str, quick: dict, full: dict, impls: list[dict], full_timeout: int
) -> tuple[argparse.Namespace, list[str], dict, list[dict], Path]:
    """The command line every suite shares; returns ``(args, mallocs, workloads, impls, out_dir)``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: a smoke test (1-2 min)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in every worker (default 1)")
    ap.add_argument("--only", nargs="*", help="implementation ids to run (default: all)")
    ap.add_argument("--workloads", nargs="*", help="workload names to run (default: all)")
    ap.add_argument(
        "--malloc",
        nargs="*",
        choices=list(MALLOC),
        help="allocator settings to run under (default: both; --quick: default only)",
    )
    ap.add_argument("--timeout", type=int, default=None, help=f"seconds per measurement (120 quick, {full_timeout})")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default results/ or results/quick/)")
    ap.add_argument(
        "--ours-src",
        type=Path,
        default=None,
        help="measure the traceTorch of this source folder (a checkout's packages/tracetorch-core/src) in the "
        "rows of this repo, e.g. a commit before a change against the same peers; needs --out",
    )
    args = ap.parse_args()
    if args.ours_src is not None:
        if not (args.ours_src / "tracetorch" / "__init__.py").is_file():
            ap.error(f"--ours-src {args.ours_src}: no tracetorch package there")
        if args.out is None:
            ap.error("--ours-src needs --out (the committed results measure this repo's own core)")
        args.ours_src = args.ours_src.resolve()
    args.timeout = args.timeout or (120 if args.quick else full_timeout)
    mallocs = args.malloc or (["default"] if args.quick else list(MALLOC))
    workloads = quick if args.quick else full
    if args.workloads:
        unknown = set(args.workloads) - set(workloads)
        if unknown:
            ap.error(f"unknown workloads {sorted(unknown)}; choose from {list(workloads)}")
        workloads = {k: v for k, v in workloads.items() if k in args.workloads}
    chosen = [i for i in impls if not args.only or i["id"] in args.only]
    out_dir = args.out or (HERE / "results" / ("quick" if args.quick else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    return args, mallocs, workloads, chosen, out_dir


def main() -> None:
    args, mallocs, workloads, impls, out_dir = parse_cli(__doc__, QUICK, FULL, IMPLS, 900)

    meta = machine_info(args.threads)
    meta["ours_src"] = str(args.ours_src) if args.ours_src else None  # None: this repo's core
    meta["quick"] = args.quick
    meta["mallocs"] = mallocs
    meta["malloc_env"] = {m: MALLOC[m] for m in mallocs}
    meta["loadavg_start"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    results: list[dict] = []
    bandwidth = None
    for name, spec in workloads.items():
        if spec["workload"] == "stream":
            bw_spec = {k: v for k, v in spec.items() if k in ("workload", "B", "N", "repeats", "steps")}
            log(f"{name}: copy bandwidth")
            bandwidth = run_one({"id": "bandwidth", "env": BENCH}, name, bw_spec, "default", args)
        for m in mallocs:
            for impl in impls:
                if not runs(impl, name, spec):
                    continue
                r = run_one(impl, name, spec, m, args)
                results.append(r)
                where = f"{name} [{m}] {impl['id']}"
                if r.get("ok"):
                    mem = r.get("peak_alloc_bytes")
                    log(
                        f"{where}: {fmt_time(r['time']['median'])}, spike rate {100 * r['spike_rate']:.1f}%"
                        + (f", peak tensor memory {fmt_mib(mem)} MiB" if mem is not None else "")
                        + f" ({r['wall_s']} s)"
                    )
                else:
                    log(f"{where}: FAILED: {r.get('error')}")
    meta["wall_s"] = time.perf_counter() - t_start
    meta["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta["torch"] = ", ".join(sorted({r["torch"] for r in results if r.get("torch")})) or "unknown"
    env_of = {i["id"]: i["env"] for i in IMPLS}
    versions = {("torch", "all"): meta["torch"]}
    for r in results:
        if r.get("ok") and r.get("dist") and r["dist"] != "torch":
            env = env_of[r["impl"]]
            versions[(r["dist"], "nox session `bench`" if env == BENCH else f".nox/bench-peers/{env}")] = r["version"]
    meta["versions"] = [{"package": d, "venv": e, "version": v} for (d, e), v in versions.items()]
    data = {"meta": meta, "workloads": workloads, "impls": impls, "bandwidth": bandwidth, "results": results}
    data["goals"] = summarize_goals(results, bandwidth, workloads, mallocs)
    (out_dir / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out_dir / "results.md").write_text(render_md(data))
    log(f"wrote {out_dir / 'results.md'} and results.json ({meta['wall_s']:.0f} s)")
    print((out_dir / "results.md").read_text())


if __name__ == "__main__":
    main()
