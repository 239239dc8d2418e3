"""Sessions for tests, lint, the demo and the packaging check. Run ``nox -l`` to list them.

All installs go through one helper, :func:`install`, which pins torch to the local CPU build and skips the
pip call entirely when the session's venv already holds exactly what was asked for (venvs are reused, so a
second run does not reinstall torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CORE = ROOT / "packages" / "tracetorch-core"
ZOO = ROOT / "packages" / "tracetorch-zoo"
EXPERIMENTS = ROOT / "experiments"
FRAMEWORK = EXPERIMENTS / "_framework"
DEFAULT_LM = "bytelm-mamba.small-v2"  # the byte LM the demo streams from (embedded in tracetorch-zoo)
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk; a bare "torch" would download a CUDA build
# torchvision imports only beside this pair (both on the machines' disks): the experiments that read images through
# torchvision's loaders get a venv of their own with it (their smoke variants need no torchvision)
VISION = ("torch==2.14.1", "torchvision==0.29.1")
VISION_EXPERIMENTS = {"fashion_mnist"}

nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]


def install(
    session: nox.Session, *requirements: str, editable: tuple[Path, ...] = (), torch_pins: tuple[str, ...] = (TORCH,)
) -> None:
    """Install ``requirements`` (and ``editable`` local packages) with torch pinned (``torch_pins``); skip if
    unchanged.

    The stamp records the requirement list and the content of each local package's pyproject.toml, so a
    change to dependencies reinstalls and anything else does not.
    """
    if not isinstance(session.virtualenv, nox.virtualenv.VirtualEnv):
        session.error("install() needs a session with a virtualenv")
    args = [*torch_pins, *requirements]
    for path in editable:
        args += ["-e", str(path)]
    key = json.dumps([args, [(path / "pyproject.toml").read_text() for path in editable]])
    digest = hashlib.sha256(key.encode()).hexdigest()
    stamp = Path(session.virtualenv.location) / ".tracetorch-install"
    if stamp.exists() and stamp.read_text() == digest:
        session.log("requirements unchanged; skipping install")
        return
    session.install(*args)
    stamp.write_text(digest)


@nox.session
def tests(session: nox.Session) -> None:
    """Test suites of the zoo and the core (pytest, each with its own config). Extra pytest arguments pass
    through: ``nox -s tests -- -k scan``."""
    # matplotlib and the onnx packages: the core's plot and onnx extras are tested too
    install(session, "pytest>=7", "matplotlib>=3.5", *ONNX, editable=(CORE, ZOO))
    session.run("pytest", str(ZOO / "tests"), *session.posargs)
    session.run("pytest", str(CORE / "tests"), *session.posargs)


@nox.session
def triton(session: nox.Session) -> None:
    """The Triton kernels (firing op, trace op, selective scan) against the torch kernels, in Triton's CPU
    interpreter (``TRITON_INTERPRET=1``): where no GPU is, the only run these kernels get. On a CUDA machine
    ``pytest packages/tracetorch-core/tests/test_triton.py`` runs them compiled."""
    install(session, "pytest>=7", TRITON, editable=(CORE,))
    session.run("pytest", str(CORE / "tests" / "test_triton.py"), *session.posargs, env={"TRITON_INTERPRET": "1"})


TRITON = "triton==3.9.0"  # a CPU-only torch build does not bring Triton; this one runs the interpreter beside it
ONNX = ("onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18")  # the core's onnx extra (tracetorch.export.to_onnx)
DOCS = ("sphinx>=8", "furo>=2024.8", "sphinx-gallery>=0.17", "myst-parser>=4", "matplotlib>=3.5", "selenium>=4.20")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (any warning fails: a broken reference, a public name without a
    docstring, a tutorial that raises), then test it: every tutorial as a script, and the built site in headless
    Chromium (links, images, console errors; screenshots in docs/_build/screenshots/). ``nox -s docs -- --serve``
    serves the site on http://127.0.0.1:8000 after building."""
    install(session, "pytest>=7", *DOCS, *ONNX, editable=(CORE, ZOO, FRAMEWORK))  # ttexp: the reproduce tutorial
    out = ROOT / "docs" / "_build" / "html"
    session.run("sphinx-build", "-W", "--keep-going", "-n", "-q", "-b", "html", "docs", str(out))
    if "--serve" in session.posargs:
        session.run("python", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", str(out))
        return
    session.run("pytest", "-q", str(ROOT / "docs" / "test_docs.py"), "-p", "no:cacheprovider")


@nox.session
def properties(session: nox.Session) -> None:
    """The long profile of the core's property suite: ``TT_PROPERTY_EXAMPLES`` random configurations (default 3000;
    the default test run draws 240) of scan == steps, save/load == uninterrupted and chunked == whole, in outputs,
    final states and gradients. ``TT_PROPERTY_SEED`` draws another set; extra arguments go to pytest."""
    install(session, "pytest>=7", editable=(CORE,))
    env = {"TT_PROPERTY_EXAMPLES": os.environ.get("TT_PROPERTY_EXAMPLES", "3000")}
    session.run("pytest", str(CORE / "tests" / "test_properties.py"), "-q", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check over the whole repository."""
    install(session, "ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: stream text from the pretrained byte LM that ships inside tracetorch-zoo (offline).

    ``nox -s demo -- --prompt "..." --max-bytes 4000 --temperature 0.7`` passes options to ``tracetorch-zoo
    generate``."""
    install(session, editable=(CORE, ZOO))
    args = list(session.posargs) or ["--prompt", "Psalms 23:1: The Lord is my shepherd", "--max-bytes", "1500"]
    env = {"HF_HUB_OFFLINE": "1"}  # the default entry is embedded: nothing to fetch
    session.run(
        "tracetorch-zoo", "generate", DEFAULT_LM, "--states", "preamble", "--temperature", "0.8", *args,
        env=env,
    )  # fmt: skip


@nox.session
def core_demo(session: nox.Session) -> None:
    """A short tour of the core on a toy stream (train an SNN, snapshot and resume its hidden states)."""
    install(session, editable=(CORE,))
    session.run("python", str(ROOT / "experiments" / "core_demo" / "demo.py"), *session.posargs)


@nox.session(reuse_venv=False)
def isolation(session: nox.Session) -> None:
    """Install only tracetorch-core into a fresh venv and check nothing beyond its dependency closure came.

    Uses a new venv every time on purpose (that is the point of the check).
    """
    session.install(TORCH)  # pin first, so the core's torch>=2.1 is already satisfied by the local CPU build
    session.install(str(CORE))
    session.run("python", str(CORE / "tests" / "check_isolation.py"))


@nox.session(reuse_venv=False)
def zoo_install(session: nox.Session) -> None:
    """``pip install ./packages/tracetorch-core ./packages/tracetorch-zoo`` into a fresh venv, then the CLI runs
    offline (``tracetorch-zoo list`` and ``--help``)."""
    session.install(TORCH)
    session.install(str(CORE), str(ZOO))
    env = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there: no network use
    session.run("tracetorch-zoo", "list", env=env)
    session.run("tracetorch-zoo", "--help", env=env, silent=True)
    # the embedded default model is package data: it must arrive with a plain (non-editable) install
    session.run("tracetorch-zoo", "generate", DEFAULT_LM, "--prompt", "Psalms 1:1: ", "--max-bytes", "64", env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (speed and peak memory), each peer library in its own venv under ``.nox/bench-peers`` (reused).

    ``--suite lif`` (the default): the LIF neuron vs snnTorch, SpikingJelly, Norse and traceTorch 0.16.4/0.19.2
    from PyPI, a torch.compile'd step loop and an in-place loop; writes benchmarks/results/results.{md,json}.
    ``nox -s bench -- --suite rnn``: the LSTM, GRU and Mamba layers vs torch.nn, mamba.py and traceTorch 0.19.2;
    writes benchmarks/results/rnn_ssm.{md,json}. ``-- --quick`` is a 1-2 minute smoke test at tiny sizes (written
    to benchmarks/results/quick/). Other options: ``-- --help`` (with or without ``--suite rnn``).
    """
    install(session, editable=(CORE,))  # this repo's traceTorch, torch pinned; torch.compile needs nothing more
    args, suite = list(session.posargs), "lif"
    for i, a in enumerate(args):  # --suite is ours, not the driver's: pick the suite, pass everything else on
        if a == "--suite" or a.startswith("--suite="):
            suite = a.partition("=")[2] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            del args[i : i + (1 if "=" in a else 2)]
            break
    drivers = {"lif": "run.py", "rnn": "run_rnn.py"}
    if suite not in drivers:
        session.error(f"--suite must be one of {sorted(drivers)}, got {suite!r}")
    session.run("python", str(ROOT / "benchmarks" / "venvs.py"), "--torch", TORCH, "--suite", suite)
    session.run("python", str(ROOT / "benchmarks" / drivers[suite]), *args)


# ------------------------------------------------------------------------------------------------ experiments
def _experiment_versions() -> list[tuple[str, str]]:
    """Every ``experiments/<name>/v<N>/config.toml`` as ``(name, "v<N>")``, sorted."""
    found = sorted(EXPERIMENTS.glob("*/v*/config.toml"))
    return [(p.parent.parent.name, p.parent.name) for p in found]


def _install_experiments(session: nox.Session, *, vision: bool = False) -> None:
    """The experiments venv: core, zoo and the runner (editable), plus every ``experiments/*/requirements.txt``;
    with ``vision``, torch and torchvision pinned to the pair that imports together (``VISION``)."""
    extra = []
    for path in sorted(EXPERIMENTS.glob("*/requirements.txt")):
        extra += [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]
    pins = VISION if vision else (TORCH,)
    install(session, "pytest>=7", *sorted(set(extra)), editable=(CORE, ZOO, FRAMEWORK), torch_pins=pins)


def _latest_versions() -> list[tuple[str, str]]:
    latest: dict[str, str] = {}
    for name, version in _experiment_versions():
        if name not in latest or int(version[1:]) > int(latest[name][1:]):
            latest[name] = version
    return sorted(latest.items())


@nox.session
@nox.parametrize("experiment, version", _experiment_versions())
def reproduce(session: nox.Session, experiment: str, version: str) -> None:
    """Full run of one experiment version: its parts in parallel (each resumes from its checkpoints), results/, check.

    ``nox -s "reproduce(experiment='byte_lm', version='v1')"``; extra arguments pass to ``python -m ttexp
    reproduce`` (e.g. ``-- --variant gpu``). Experiments in ``VISION_EXPERIMENTS`` get torchvision."""
    _install_experiments(session, vision=experiment in VISION_EXPERIMENTS)
    session.run("python", "-m", "ttexp", "reproduce", experiment, version, *session.posargs)


@nox.session
def smoke(session: nox.Session) -> None:
    """Tiny configs of every experiment (latest version), their sanity checks, and the runner's tests
    (resume after a kill is bit-identical, 2-process DDP equals 1 process). Part of CI."""
    _install_experiments(session)
    for name, version in _latest_versions():
        run_dir = str(EXPERIMENTS / ".runs" / name / f"{version}-smoke")
        # one thread: tiny models gain nothing from more, and torch's default oversubscribes busy machines
        session.run(
            "python", "-m", "ttexp", "run", name, version, "--variant", "smoke", "--run-dir", run_dir, "--threads", "1"
        )
        session.run("python", "-m", "ttexp", "check", name, version, "--variant", "smoke", "--run-dir", run_dir)
    session.run("pytest", str(EXPERIMENTS / "tests"), *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """Compare every committed results.json with its version's expected.json (no training)."""
    _install_experiments(session)
    failed = []
    for name, version in _experiment_versions():
        if (EXPERIMENTS / name / version / "results" / "results.json").is_file():
            try:
                session.run("python", "-m", "ttexp", "check", name, version)
            except nox.command.CommandFailed:
                failed.append(f"{name} {version}")
    if failed:
        session.error(f"expectations not met: {', '.join(failed)}")


@nox.session
def publish(session: nox.Session) -> None:
    """Publish a trained experiment to the zoo: ``nox -s publish -- byte_lm v1 [--endpoint URL | --local-hub DIR]``
    pushes weights, snapshots and results to the Hub and writes the new revision into the registry entry."""
    if len(session.posargs) < 2:
        session.error(
            "usage: nox -s publish -- NAME VERSION [--endpoint URL | --local-hub DIR] [--repo-id ID] [--part PART]"
        )
    _install_experiments(session, vision=session.posargs[0] in VISION_EXPERIMENTS)
    session.run("python", "-m", "ttexp", "publish", *session.posargs)
