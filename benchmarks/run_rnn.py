"""Benchmark driver for the RNN/SSM suite: traceTorch's LSTM, GRU and Mamba vs torch.nn, mamba.py and the original
traceTorch 0.19.2, every ratio from one run.

``nox -s bench -- --suite rnn`` sets up the peer venvs (``venvs.py --suite rnn``) and calls this script with the
bench session's interpreter; ``--quick`` is a smoke test at tiny sizes. The protocol is the LIF
suite's (``run.py``, whose helpers this reuses): one fresh process per (implementation, workload, allocator mode),
running ``worker_rnn.py`` in the venv that holds the implementation; the results go to
``results/rnn_ssm.json`` and ``results/rnn_ssm.md`` (``results/quick/`` for ``--quick``), both generated.
See README.md for what is measured and how.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as R  # noqa: E402  (benchmarks/run.py: machine info, the per-process runner, formatting)

BENCH = R.BENCH
WORKER = "worker_rnn.py"
STEM = "rnn_ssm"

TRAIN_RNN, STREAM_LSTM = ["lstm_train", "gru_train"], ["lstm_stream"]
TRAIN_MAMBA, STREAM_MAMBA = ["mamba_train"], ["mamba_stream"]
_ROWS = [
    # id, environment, library, role, workloads. The API each row exercises is echoed by the worker.
    ("tracetorch-scan", BENCH, "traceTorch (this repo)", "ours", TRAIN_RNN + TRAIN_MAMBA),
    ("tracetorch", BENCH, "traceTorch (this repo)", "ours", STREAM_LSTM + STREAM_MAMBA),
    ("tracetorch-steps", BENCH, "traceTorch (this repo)", "ours-variant", ["lstm_train"]),
    ("torch-nn", BENCH, "torch.nn", "reference", TRAIN_RNN + STREAM_LSTM),
    ("mambapy", "mambapy", "mamba.py (mambapy)", "peer", TRAIN_MAMBA + STREAM_MAMBA),
    ("tracetorch-0.19.2", "tracetorch-0.19.2", "traceTorch 0.19.2 (PyPI)", "peer",
     [*TRAIN_RNN, *STREAM_LSTM, *TRAIN_MAMBA, *STREAM_MAMBA]),
]  # fmt: skip
IMPLS: list[dict] = [{"id": i, "env": e, "lib": lib, "role": r, "workloads": w} for i, e, lib, r, w in _ROWS]
LIB = {i["id"]: i["lib"] for i in IMPLS}
OURS = {"train": "tracetorch-scan", "stream": "tracetorch"}

_MAMBA = {"model": "mamba", "D": 256, "d-state": 16, "d-conv": 4, "expand": 1}
FULL = {
    "lstm_train": {"workload": "train", "model": "lstm", "T": 200, "B": 32, "D": 256, "warmup": 3, "repeats": 20},
    "gru_train": {"workload": "train", "model": "gru", "T": 200, "B": 32, "D": 256, "warmup": 3, "repeats": 20},
    "lstm_stream": {"workload": "stream", "model": "lstm", "B": 32, "D": 256, "warmup": 200, "repeats": 25,
                    "steps": 200},
    "mamba_train": {"workload": "train", **_MAMBA, "T": 512, "B": 8, "warmup": 2, "repeats": 10},
    "mamba_stream": {"workload": "stream", **_MAMBA, "B": 8, "warmup": 200, "repeats": 25, "steps": 200},
}  # fmt: skip
QUICK = {
    "lstm_train": {"workload": "train", "model": "lstm", "T": 20, "B": 4, "D": 64, "warmup": 1, "repeats": 3},
    "gru_train": {"workload": "train", "model": "gru", "T": 20, "B": 4, "D": 64, "warmup": 1, "repeats": 3},
    "lstm_stream": {"workload": "stream", "model": "lstm", "B": 4, "D": 64, "warmup": 20, "repeats": 5, "steps": 50},
    "mamba_train": {"workload": "train", **_MAMBA, "D": 64, "T": 32, "B": 2, "warmup": 1, "repeats": 3},
    "mamba_stream": {"workload": "stream", **_MAMBA, "D": 64, "B": 2, "warmup": 20, "repeats": 5, "steps": 50},
}  # fmt: skip

# (workload, what, numerator row, denominator row, target, threshold or None for context). Time ratios are
# computed under every allocator mode; "memory" rows compare peak tensor memory (allocator-independent).
GOALS = [
    ("lstm_train", "time", "LSTM training: our `scan` / `nn.LSTM`", "tracetorch-scan", "torch-nn", "<=", 1.2),
    ("lstm_train", "time", "LSTM training: 0.19.2 stepped / our `scan`", "tracetorch-0.19.2", "tracetorch-scan",
     ">=", None),
    ("gru_train", "time", "GRU training: our `scan` / `nn.GRU`", "tracetorch-scan", "torch-nn", "<=", None),
    ("gru_train", "time", "GRU training: 0.19.2 stepped / our `scan`", "tracetorch-0.19.2", "tracetorch-scan",
     ">=", None),
    ("lstm_stream", "time", "LSTM streaming step: `nn.LSTMCell` / our `layer(x)`", "torch-nn", "tracetorch",
     ">=", 1.0),
    ("mamba_train", "time", "Mamba training: mamba.py (pscan) / our `scan`", "mambapy", "tracetorch-scan",
     ">=", 2.0),
    ("mamba_train", "time", "Mamba training: 0.19.2 stepped / our `scan`", "tracetorch-0.19.2", "tracetorch-scan",
     ">=", 2.0),
    ("mamba_stream", "time", "Mamba streaming step: 0.19.2 / our `layer(x)`", "tracetorch-0.19.2", "tracetorch",
     ">=", 2.0),
    ("mamba_stream", "time", "Mamba streaming step: mamba.py `step` / our `layer(x)`", "mambapy", "tracetorch",
     ">=", None),
    ("lstm_train", "memory", "LSTM training peak tensor memory: ours / `nn.LSTM`", "tracetorch-scan", "torch-nn",
     "<=", None),
    ("gru_train", "memory", "GRU training peak tensor memory: ours / `nn.GRU`", "tracetorch-scan", "torch-nn",
     "<=", None),
    ("mamba_train", "memory", "Mamba training peak tensor memory: ours / mamba.py", "tracetorch-scan", "mambapy",
     "<=", None),
    ("mamba_train", "memory", "Mamba training peak tensor memory: ours / 0.19.2", "tracetorch-scan",
     "tracetorch-0.19.2", "<=", None),
]  # fmt: skip


def _metric(r: dict | None, kind: str) -> float | None:
    if kind == "time":
        return R.med(r)
    return r.get("peak_alloc_bytes") if r and r.get("ok") else None


def size(spec: dict) -> str:
    keys = ("T", "B", "D", "d-state", "d-conv", "expand")
    return ", ".join(f"{k.replace('-', '_')}={spec[k]}" for k in keys if k in spec)


def summarize_goals(results: list[dict], workloads: dict, mallocs: list[str]) -> list[dict]:
    by = {(r["workload_name"], r["malloc"], r["impl"]): r for r in results}
    goals = []
    for name, kind, what, num, den, target, threshold in GOALS:
        if name not in workloads:
            continue
        row = {"what": f"{what} ({size(workloads[name])})", "kind": kind, "num": num, "den": den}
        row.update(target=target, threshold=threshold, by_malloc={})
        for m in mallocs if kind == "time" else ["default"]:
            a, b = _metric(by.get((name, m, num)), kind), _metric(by.get((name, m, den)), kind)
            v = a / b if a and b else None
            met = None if v is None or threshold is None else (v >= threshold if target == ">=" else v <= threshold)
            row["by_malloc"]["any" if kind == "memory" else m] = {"value": v, "met": met}
        goals.append(row)
    return goals


def _cell(cell: dict | None, threshold) -> str:
    if not cell or cell["value"] is None:
        return "n/a"
    status = "context" if threshold is None else ("met" if cell["met"] else "**not met**")
    return f"{R.fmt_ratio(cell['value'])}: {status}"


def render_md(data: dict) -> str:
    meta, workloads, results, goals = data["meta"], data["workloads"], data["results"], data["goals"]
    mallocs = meta["mallocs"]
    by = {(r["workload_name"], r["malloc"], r["impl"]): r for r in results}
    impls = {i["id"]: i for i in IMPLS}
    if meta["quick"]:
        intro = (
            "Generated by `benchmarks/run_rnn.py` (`nox -s bench -- --suite rnn --quick`): tiny sizes, a smoke "
            "test; do not edit and do not quote these numbers. See [benchmarks/README.md](../../README.md)."
        )
    else:
        intro = (
            "Generated by `benchmarks/run_rnn.py` (`nox -s bench -- --suite rnn`); do not edit. Methodology and peer "
            "configuration: [benchmarks/README.md](../README.md)."
        )
    lines = R.header_lines("# traceTorch benchmark results: recurrent and state-space layers", intro, meta)
    lines += [
        "",
        "## Goals (ratios from this run)",
        "",
        "'context' rows have no stated goal. Memory ratios come from the `default` run (peak tensor bytes do "
        "not depend on the allocator).",
        "",
        "| ratio | target | " + " | ".join(f"measured, {R.MALLOC_TITLE[m].split(' (')[0]}" for m in mallocs) + " |",
        "|---|---|" + "---|" * len(mallocs),
    ]
    for g in goals:
        target = "—" if g["threshold"] is None else f"{g['target']} {g['threshold']:g}×"
        if "any" in g["by_malloc"]:
            cells = [_cell(g["by_malloc"]["any"], g["threshold"])] + ["(same)"] * (len(mallocs) - 1)
        else:
            cells = [_cell(g["by_malloc"].get(m), g["threshold"]) for m in mallocs]
        lines.append(f"| {g['what']} | {target} | " + " | ".join(cells) + " |")

    for name, spec in workloads.items():
        stream = spec["workload"] == "stream"
        ours_id = OURS[spec["workload"]]
        model = {"lstm": "LSTM", "gru": "GRU", "mamba": "Mamba block"}[spec["model"]]
        for m in mallocs:
            rows = [r for (w, mm, _), r in by.items() if w == name and mm == m]
            if not rows:
                continue
            with_mem = m == "default"
            if stream:
                title = f"{model}, streaming step, inference: {size(spec)}"
                rep = f"{spec['repeats']} blocks of {spec['steps']} steps after {spec['warmup']} warm-up steps"
                what = "Time per step."
                head = ["library", "API", "time / step", "÷ ours", "output RMS", "parameters"]
                head += ["peak temporary tensor memory (KiB)"] if with_mem else []
            else:
                title = f"{model}, training: {size(spec)}"
                rep = f"{spec['repeats']} iterations after {spec['warmup']} warm-up"
                what = "Time per iteration: forward over T, then backward of sum(g · y) with g fixed and dense."
                head = ["library", "API", "time / iteration", "÷ ours", "output RMS", "parameters", "grads"]
                head += ["peak tensor memory (MiB)", "÷ ours", "peak RSS Δ (MiB)"] if with_mem else []
            ours_r = by.get((name, m, ours_id))
            ours_t = R.med(ours_r)
            ours_b = ours_r.get("peak_alloc_bytes") if ours_r and ours_r.get("ok") else None
            lines += [
                "",
                f"## {title}; {R.MALLOC_TITLE[m]}",
                "",
                f"{what} Median over {rep}, p25–p75 in brackets. '÷ ours' is the row's number divided by ours "
                "(above 1: ours is faster or smaller).",
                "",
                "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head),
            ]
            rows.sort(key=lambda r: (R.med(r) is None, R.med(r) or 0))
            for r in rows:
                i = impls[r["impl"]]
                label = (f"**{i['lib']}**" if i["role"] == "ours" else i["lib"]) + f" `{r['impl']}`"
                if not r.get("ok"):
                    err = r.get("error", "failed").replace("|", "/")
                    err = err if r.get("unavailable") else f"failed: {err}"
                    lines.append(f"| {label} | {r.get('api') or ''} | {err} |" + " |" * (len(head) - 3))
                    continue
                t = r["time"]
                cells = [
                    label,
                    r["api"],
                    f"{R.fmt_time(t['median'])} [{R.fmt_time(t['p25'])}–{R.fmt_time(t['p75'])}]",
                    R.fmt_ratio(t["median"] / ours_t) if ours_t else "n/a",
                    f"{r['output_rms']:.4f}" + ("" if r.get("finite") else " (not finite!)"),
                    f"{r['n_params']:,}",
                ]
                if stream:
                    pk = r.get("peak_alloc_bytes")
                    cells += ["n/a" if pk is None else f"{pk / 1024:.0f}"] if with_mem else []
                else:
                    cells += ["ok" if r["grads_ok"] else "**missing/NaN/zero**"]
                    if with_mem:
                        pb = r.get("peak_alloc_bytes")
                        cells += [R.fmt_mib(pb), R.fmt_ratio(pb / ours_b) if pb and ours_b else "n/a"]
                        cells += [R.fmt_mib(r.get("peak_rss_bytes"))]
                lines.append("| " + " | ".join(cells) + " |")
    notes = {}
    for r in results:
        if r.get("ok") and r.get("note"):
            notes.setdefault(f"{r['impl']}` ({r['workload_name']}", r["note"])
    if notes:
        lines += ["", "## Modules as constructed (repr echoed by the workers)", ""]
        lines += [f"- `{k}): {n}" for k, n in notes.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    args, mallocs, workloads, impls, out_dir = R.parse_cli(__doc__, QUICK, FULL, IMPLS, 600)

    meta = R.machine_info(args.threads)
    meta["ours_src"] = str(args.ours_src) if args.ours_src else None  # None: this repo's core
    meta.update(quick=args.quick, mallocs=mallocs, malloc_env={m: R.MALLOC[m] for m in mallocs})
    meta["loadavg_start"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    results: list[dict] = []
    for name, spec in workloads.items():
        for m in mallocs:
            for impl in impls:
                if name not in impl["workloads"]:
                    continue
                r = R.run_one(impl, name, spec, m, args, worker=WORKER)
                results.append(r)
                where = f"{name} [{m}] {impl['id']}"
                if r.get("ok"):
                    mem = r.get("peak_alloc_bytes")
                    R.log(
                        f"{where}: {R.fmt_time(r['time']['median'])}, {r['n_params']:,} parameters"
                        + (f", peak tensor memory {R.fmt_mib(mem)} MiB" if mem is not None else "")
                        + f" ({r['wall_s']} s)"
                    )
                else:
                    R.log(f"{where}: {'' if r.get('unavailable') else 'FAILED: '}{r.get('error')}")
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
    data = {"meta": meta, "workloads": workloads, "impls": impls, "results": results}
    data["goals"] = summarize_goals(results, workloads, mallocs)
    (out_dir / f"{STEM}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out_dir / f"{STEM}.md").write_text(render_md(data))
    R.log(f"wrote {out_dir / (STEM + '.md')} and {STEM}.json ({meta['wall_s']:.0f} s)")
    print((out_dir / f"{STEM}.md").read_text())


if __name__ == "__main__":
    main()
