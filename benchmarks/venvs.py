"""Create (or reuse) one venv per peer library under ``.nox/bench-peers/<peer>`` (git-ignored with ``.nox/``).

Run by ``nox -s bench`` with the bench session's interpreter: ``python benchmarks/venvs.py --torch torch==X``.
Each venv gets the pinned CPU torch first, then the peer's light runtime requirements, then the peer itself
with ``--no-deps`` (several peers declare torchvision/torchaudio/triton or an unpinned torch, which would pull
a multi-GB CUDA build). A stamp file records what was asked for: a second run with the same specification
skips pip entirely. A peer that fails to install is reported and skipped (its rows say so in the results).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".nox" / "bench-peers"

# peer -> (light runtime requirements installed normally, the peer packages installed with --no-deps,
#          modules that must import afterwards). Versions are pinned so that results are comparable.
PEERS: dict[str, dict[str, list[str]]] = {
    "snntorch": {
        # the 1.0.0 wheel declares no requirements; its neurons import only torch
        "deps": ["numpy"],  # not needed by the neurons, but torch warns at import without it
        "nodeps": ["snntorch==1.0.0"],
        "imports": ["snntorch"],
    },
    "spikingjelly": {
        # declares torchvision, torchaudio, tensorboard, SciencePlots, h5py, ...; the neuron modules need loguru
        # (logger), numpy and packaging at import
        "deps": ["numpy", "loguru>=0.7,<1", "packaging", "tqdm"],
        "nodeps": ["spikingjelly==2.0.0"],
        "imports": ["spikingjelly.activation_based.neuron"],
    },
    "norse": {
        # declares torchvision (unused by norse.torch; PyPI's torchvision does not import beside this torch),
        # nir and nirtorch (nirtorch requires torch, so --no-deps)
        "deps": ["numpy", "nir==1.0.8"],
        "nodeps": ["norse==1.1.0", "nirtorch==2.6"],
        "imports": ["norse.torch"],
    },
    "tracetorch-0.16.4": {
        # imports tracetorch.plot eagerly: numpy + matplotlib
        "deps": ["numpy", "matplotlib"],
        "nodeps": ["tracetorch==0.16.4"],
        "imports": ["tracetorch"],
    },
    "tracetorch-0.19.2": {
        # declares numpy, matplotlib, scipy (plot is imported lazily, scipy only inside one plot helper)
        "deps": ["numpy", "matplotlib", "scipy"],
        "nodeps": ["tracetorch==0.19.2"],
        "imports": ["tracetorch"],
    },
    "mambapy": {
        # declares an unpinned torch only; its Mamba block (mambapy.mamba) and parallel scan import only torch
        "deps": ["numpy"],  # not needed by mambapy, but torch warns at import without it
        "nodeps": ["mambapy==1.2.0"],
        "imports": ["mambapy.mamba"],
    },
}
# which peers each benchmark suite needs (``--suite``): the LIF suite (run.py) and the RNN/SSM suite (run_rnn.py)
SUITES: dict[str, list[str]] = {
    "lif": ["snntorch", "spikingjelly", "norse", "tracetorch-0.16.4", "tracetorch-0.19.2"],
    "rnn": ["tracetorch-0.19.2", "mambapy"],
}


def python_of(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure(peer: str, torch_req: str, log) -> Path:
    spec = PEERS[peer]
    path = VENVS / peer
    key = json.dumps([sys.version_info[:2], torch_req, spec["deps"], spec["nodeps"]])
    digest = hashlib.sha256(key.encode()).hexdigest()
    stamp = path / ".bench-install"
    py = python_of(path)
    if py.exists() and stamp.exists() and stamp.read_text() == digest:
        log(f"{peer}: venv up to date ({path}); skipping install")
        return py
    log(f"{peer}: creating venv {path}")
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, torch_req, *spec["deps"]], check=True)
    subprocess.run([*pip, "--no-deps", *spec["nodeps"]], check=True)
    for mod in spec["imports"]:
        subprocess.run([str(py), "-c", f"import {mod}"], check=True)
    stamp.write_text(digest)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torch", required=True, help="the torch requirement, e.g. torch==2.13.0")
    ap.add_argument("--suite", choices=list(SUITES), default="lif", help="set up the peers of this suite")
    ap.add_argument("--only", nargs="*", default=None, help="peers to set up (default: those of --suite)")
    args = ap.parse_args()
    VENVS.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[venvs] {msg}", file=sys.stderr, flush=True)

    for peer in args.only if args.only is not None else SUITES[args.suite]:
        try:
            ensure(peer, args.torch, log)
        except subprocess.CalledProcessError as exc:  # a peer that won't install is reported, not fatal
            log(f"{peer}: setup FAILED ({exc}); its rows will say so")


if __name__ == "__main__":
    main()
