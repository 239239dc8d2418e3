"""``python -m ttexp``: run, check, tabulate and publish experiments.

    python -m ttexp list
    python -m ttexp run NAME VERSION [--variant V] [--only PART ...] [--device cpu|cuda|auto] [--threads N]
    python -m ttexp reproduce NAME VERSION [--variant V] [--device D] [--time-limit MIN]   (parts in parallel,
        results, check; with a time limit, what finished and partial results of the rest)
    python -m ttexp check NAME VERSION [--variant V]
    python -m ttexp table NAME VERSION [--variant V]
    python -m ttexp publish NAME VERSION [--endpoint URL] [--local-hub DIR]

``run`` under ``torchrun --nproc-per-node K -m ttexp run ...`` trains with DDP. Full runs write to
``experiments/NAME/VERSION/results/``; a variant writes to ``results/<variant>/`` except ``smoke``, whose results
stay in the scratch folder ``experiments/.runs/`` (as do checkpoints and data caches).

``--time-limit MIN`` stops training after MIN minutes (checkpointed: the next run resumes); with ``--partial``, an
experiment that supports it reports its unfinished runs as they stand, marked partial, into
``results/partial/`` (never over the full results); ``reproduce --time-limit`` does both.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from . import dist
from .config import ConfigError, load_config
from .context import Context
from .files import write_text
from .results import check_expected, read_results, write_json

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[3]  # experiments/_framework/ttexp/cli.py -> repository root
EXPERIMENTS = ROOT / "experiments"


def retain_freed_memory() -> None:
    """Keep freed memory in the process (glibc): big tensors are otherwise returned to the OS on free and
    page-faulted back on the next allocation, which costs 20-40 % of a CPU training step on the machines
    measured here. Same effect as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``; no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve every allocation from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD (an int): keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass


def experiment_names() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/experiment.py"))


def load_experiment(name: str) -> ModuleType:
    path = EXPERIMENTS / name / "experiment.py"
    if not path.is_file():
        raise SystemExit(f"ttexp: no experiment {name!r} (known: {', '.join(experiment_names())})")
    spec = importlib.util.spec_from_file_location(f"ttexp_experiment_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_context(args: argparse.Namespace, *, device: str = "cpu", rank: int = 0, world: int = 1) -> Context:
    version_dir = EXPERIMENTS / args.name / args.version
    cfg_path = version_dir / "config.toml"
    if not cfg_path.is_file():
        versions = sorted(p.name for p in (EXPERIMENTS / args.name).glob("v*") if p.is_dir())
        raise SystemExit(f"ttexp: {cfg_path} does not exist (versions of {args.name}: {', '.join(versions)})")
    cfg = load_config(cfg_path, args.variant, overrides=getattr(args, "set", None) or ())
    tag = args.version + (f"-{args.variant}" if args.variant else "")
    run_dir = Path(args.run_dir) if args.run_dir else EXPERIMENTS / ".runs" / args.name / tag
    if args.variant == "smoke" or getattr(args, "set", None):
        # smoke runs and runs with --set overrides (probes) are not the version's results: keep them in the run dir
        results_dir = run_dir / "results"
    elif args.variant:
        results_dir = version_dir / "results" / args.variant
    else:
        results_dir = version_dir / "results"
    if getattr(args, "partial", False):  # unfinished runs reported as they stand: never over the full results
        results_dir = results_dir / "partial"
    return Context(
        name=args.name,
        version=args.version,
        config=cfg,
        root=ROOT,
        exp_dir=EXPERIMENTS / args.name,
        version_dir=version_dir,
        results_dir=results_dir,
        run_dir=run_dir,
        device=device,
        rank=rank,
        world_size=world,
        only=getattr(args, "only", None),
        options={
            "max_steps": getattr(args, "max_steps", None),
            "flush_denormal": getattr(args, "flush_denormal", False),
            "deadline": getattr(args, "deadline", None),
            "partial": getattr(args, "partial", False),
        },
    )


def render(mod: ModuleType, results: dict, results_dir: Path) -> None:
    """Regenerate ``results.md`` and the plots from ``results`` (the JSON's content)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(mod, "plots"):
        import matplotlib

        matplotlib.use("Agg")
        mod.plots(results, results_dir)
    write_text(results_dir / "results.md", mod.table(results) + plot_links(results_dir))


def plot_links(results_dir: Path) -> str:
    """A ``## Plots`` section of ``results.md`` showing every plot in ``results_dir`` (none: empty)."""
    names = sorted(p.name for p in results_dir.glob("*.png"))
    if not names:
        return ""
    lines = ["", "## Plots", ""] + [f"![{Path(n).stem.replace('_', ' ')}]({n})" for n in names]
    return "\n".join(lines) + "\n"


def experiment_parts(mod: ModuleType, ctx: Context) -> list[str]:
    """The experiment's parts (``mod.parts(ctx)``; none for a one-part experiment without that function)."""
    return list(mod.parts(ctx)) if hasattr(mod, "parts") else []


def check_only(mod: ModuleType, ctx: Context) -> None:
    """``--only`` may name only the experiment's parts."""
    names = experiment_parts(mod, ctx)
    unknown = set(ctx.only or []) - set(names)
    if unknown:
        raise SystemExit(f"{ctx.name}: unknown part(s) {sorted(unknown)}; parts: {names}")


def cmd_run(args: argparse.Namespace) -> int:
    retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "flush_denormal", False) and not torch.set_flush_denormal(True):
        raise SystemExit("ttexp: --flush-denormal: this CPU cannot flush subnormals to zero")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("ttexp: --device cuda but no GPU is visible")
    if args.time_limit is not None:
        args.deadline = time.time() + 60 * args.time_limit
    rank, world, device = dist.init(device)
    try:
        ctx = make_context(args, device=device, rank=rank, world=world)
        mod = load_experiment(args.name)
        check_only(mod, ctx)
        out = mod.run(ctx)
        if out is None or not ctx.is_main:
            return 0
        results = {
            "experiment": ctx.name,
            "version": ctx.version,
            "variant": ctx.config.variant,
            "command": ctx.config.command,
            "config": ctx.config.data,
            "provenance": ctx.provenance(),
            **out,
        }
        if out.get("partial"):
            print("PARTIAL results (unfinished runs as they stand; not the version's results)")
        path = write_json(ctx.results_dir / "results.json", results)
        render(mod, results, ctx.results_dir)
        print(f"results: {path}")
        return 0
    finally:
        dist.finish()


def cmd_table(args: argparse.Namespace) -> int:
    ctx = make_context(args)
    mod = load_experiment(args.name)
    render(mod, read_results(ctx.results_dir / "results.json"), ctx.results_dir)
    print(ctx.results_dir / "results.md")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    ctx = make_context(args)
    path = ctx.results_dir / "results.json"
    if not path.is_file():
        print(f"ttexp check: no results at {path}; run the experiment first", file=sys.stderr)
        return 1
    expected = json.loads((ctx.version_dir / "expected.json").read_text())
    section = expected.get(args.variant or "full", {})
    rows = check_expected(read_results(path), section)
    if not rows:
        print(f"ttexp check: expected.json has no rules for {args.variant or 'full'!r}", file=sys.stderr)
        return 1
    for r in rows:
        got = f"{r['got']:.4f}" if isinstance(r["got"], float) else str(r["got"])
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['metric']:40s} {got:>10s}  want {r['want']}  ({r['source']})")
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed}/{len(rows)} expectations met")
    return 1 if failed else 0


def cmd_publish(args: argparse.Namespace) -> int:
    ctx = make_context(args)
    mod = load_experiment(args.name)
    if not hasattr(mod, "publish"):
        raise SystemExit(f"ttexp: experiment {args.name} publishes nothing")
    extra = {"part": args.part} if args.part else {}  # only experiments with several publishable parts take it
    mod.publish(
        ctx,
        endpoint=args.endpoint,
        local_hub=args.local_hub,
        repo_id=args.repo_id,
        registry_dir=args.registry_dir,
        **extra,
    )
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """The full run: every part in its own process (cores split between them), then the combining run that
    writes results, then ``check``. Each part resumes from its checkpoints, so re-running continues."""
    import os
    import subprocess

    ctx = make_context(args)
    mod = load_experiment(args.name)
    parts = experiment_parts(mod, ctx)
    base = [sys.executable, "-m", "ttexp", "run", args.name, args.version, "--device", args.device]
    if args.variant:
        base += ["--variant", args.variant]
    if args.run_dir:
        base += ["--run-dir", args.run_dir]
    for item in args.set or ():
        base += ["--set", item]
    if args.time_limit is not None:  # one deadline for the parts and the combining run: it only reports
        base += ["--deadline", repr(time.time() + 60 * args.time_limit)]
    if len(parts) > 1:
        threads = max(1, (os.cpu_count() or 1) // len(parts))
        procs = [subprocess.Popen([*base, "--only", p, "--threads", str(threads)]) for p in parts]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"ttexp reproduce: part processes exited with {codes}", file=sys.stderr)
            return 1
    code = subprocess.call(base)
    if code:
        return code
    if args.time_limit is not None:
        code = subprocess.call([*base, "--partial"])  # what has not finished, as it stands
        if code:
            return code
        if not (ctx.results_dir / "results.json").is_file() or _unfinished_since(ctx, mod):
            print("ttexp reproduce: stopped at the time limit; partial results in results/partial/, check skipped")
            return 0
    return cmd_check(args)


def _unfinished_since(ctx: Context, mod: ModuleType) -> bool:
    """Whether the full results on disk are older than this run's partial ones (a stale full result)."""
    full, partial = ctx.results_dir / "results.json", ctx.results_dir / "partial" / "results.json"
    return partial.is_file() and partial.stat().st_mtime > full.stat().st_mtime


def cmd_list(args: argparse.Namespace) -> int:
    for name in experiment_names():
        versions = sorted(p.parent.name for p in (EXPERIMENTS / name).glob("v*/config.toml"))
        print(name, " ".join(versions))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ttexp", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="experiments and their versions").set_defaults(fn=cmd_list)
    for name, fn, what in (
        ("run", cmd_run, "run (or resume) an experiment"),
        ("reproduce", cmd_reproduce, "full run: parts in parallel processes, results, then check"),
        ("check", cmd_check, "compare results with expected.json"),
        ("table", cmd_table, "regenerate results.md and plots from results.json"),
        ("publish", cmd_publish, "publish weights, snapshots and results to the zoo"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--variant", default=None, help="a [variants.X] table of the config (smoke, gpu, ...)")
        p.add_argument("--run-dir", default=None, help="scratch folder (default experiments/.runs/NAME/VERSION)")
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a config value (TOML value, dotted key)"
        )
        p.set_defaults(fn=fn)
        if name in ("run", "reproduce"):
            p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when a GPU is visible)")
            p.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                           help="stop training after MIN minutes, checkpointed (reproduce: then report partial "
                           "results of what did not finish)")  # fmt: skip
        if name == "run":
            p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)  # set by reproduce
            p.add_argument(
                "--partial",
                action="store_true",
                help="report unfinished runs as they stand (marked partial, into results/partial/)",
            )
            p.add_argument("--only", nargs="+", default=None, help="train only these parts")
            p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
            p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (debugging)")
            p.add_argument(
                "--flush-denormal",
                action="store_true",
                help="flush subnormal floats to zero on the CPU (torch.set_flush_denormal; recorded in provenance): "
                "surrogate gradients of membranes far below threshold underflow into subnormals, which the CPU "
                "handles ~10x slower; numbers change only below 1.2e-38",
            )
        if name == "publish":
            p.add_argument("--endpoint", default=None, help="Hub endpoint (default: the client's HF_ENDPOINT)")
            p.add_argument("--local-hub", default=None, help="serve a local test Hub from this folder and use it")
            p.add_argument("--repo-id", default=None, help="owner/name (default from the config)")
            p.add_argument(
                "--registry-dir", default=None, help="where entries/ and embedded/ go (default: the zoo package)"
            )
            p.add_argument("--part", default=None, help="the part to publish (default: the config's main part)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:  # a bad --variant or --set: one line, no traceback
        print(f"ttexp: {exc}", file=sys.stderr)
        return 2
