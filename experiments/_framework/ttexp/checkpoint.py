"""Resumable checkpoints, safetensors only (nothing is ever unpickled).

A checkpoint is a folder ``<root>/step-<N>/`` written under a temporary name and renamed into place, so a run
killed at any point leaves only complete checkpoints behind. It holds, for a model and its optimizer:

* ``model.safetensors``: the ``state_dict``;
* ``optimizer.safetensors``: every tensor of the optimizer's state, the rest (param groups, scalars) as JSON in
  the file's metadata;
* ``states.rank<r>.safetensors``: the model's hidden states on each rank (TBPTT carries them across steps);
* ``rng.rank<r>.safetensors``: the torch CPU (and CUDA) generator states of each rank;
* ``meta.json``: the step, the config hash and whatever the experiment adds (history, data position);
* ``checksums.json``: the sha256 of every other file, written last.

Resuming restores all of it, so a resumed run computes exactly what an uninterrupted one would. Loading first
checks every file against ``checksums.json`` and reads it whole, and only then changes the model: a damaged
checkpoint (a flipped byte, a truncated file, one that cannot be read) raises :class:`CheckpointError` naming
the file, with the model, optimizer and RNG untouched, so the caller can fall back to an older checkpoint
(:meth:`~ttexp.train.Trainer.resume` does). A checkpoint written before checksums existed is read unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import tracetorch as tt

__all__ = ["CheckpointError", "Checkpointer", "load_optimizer", "optimizer_tensors"]

CHECKSUMS = "checksums.json"


class CheckpointError(RuntimeError):
    """A checkpoint is damaged: a file is missing, cannot be read, or does not match its recorded sha256."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (``"<param index>.<key>"``) and a JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                rest["state"].setdefault(str(idx), {})[k] = v
    json.dumps(rest)  # fail loudly on state we cannot store
    return tensors, rest


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, st in rest["state"].items():
        state.setdefault(int(idx), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


class Checkpointer:
    """Save and restore training checkpoints of one model under ``root``; keeps the newest ``keep``.

    Args:
        root: folder for ``step-<N>/`` checkpoints (created when needed).
        rank, world_size: this process's place in a distributed run (rank 0 writes the shared files).
    """

    def __init__(self, root: str | Path, *, keep: int = 2, rank: int = 0, world_size: int = 1) -> None:
        self.root = Path(root)
        self.keep = keep
        self.rank = rank
        self.world_size = world_size

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            if p.name.startswith("step-") and (p / "meta.json").is_file():
                found.append(int(p.name[5:]))
        return sorted(found)

    def latest(self) -> int | None:
        s = self.steps()
        return s[-1] if s else None

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:07d}"

    def save(self, step: int, model: nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> Path:
        """Write checkpoint ``step`` (all ranks call this; each writes its own states and RNG)."""
        final = self.path(step)
        tmp = self.root / f".tmp-step-{step:07d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        r = self.rank
        tt.save_states(model, tmp / f"states.rank{r}.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / f"rng.rank{r}.safetensors"))
        self._barrier()
        if self.rank == 0:
            weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(weights, str(tmp / "model.safetensors"))
            tensors, rest = optimizer_tensors(opt)
            save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"rest": json.dumps(rest)})
            (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1))
            sums = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
            (tmp / CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=1))
            for f in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self.steps()[: -self.keep]:
                shutil.rmtree(self.path(old), ignore_errors=True)
        self._barrier()
        return final

    def verify(self, step: int) -> bool:
        """Check every file of checkpoint ``step`` against its ``checksums.json``; :class:`CheckpointError` naming
        the first damaged file. Returns ``False`` for a checkpoint written before checksums (nothing to check)."""
        p = self.path(step)
        sums_file = p / CHECKSUMS
        if not sums_file.is_file():
            return False
        try:
            sums = json.loads(sums_file.read_text())["sha256"]
            if not isinstance(sums, dict) or "meta.json" not in sums:
                raise ValueError("no sha256 table")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{sums_file}: unreadable checksums ({exc})") from exc
        for name, want in sums.items():
            f = p / name
            if not f.is_file():
                raise CheckpointError(f"{f}: missing (listed in {CHECKSUMS})")
            got = sha256_file(f)
            if got != want:
                raise CheckpointError(f"{f}: sha256 {got[:16]}... does not match the recorded {str(want)[:16]}...")
        return True

    def load(self, step: int, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore checkpoint ``step`` into ``model`` and ``opt``; returns its ``meta.json``.

        Everything is verified (:meth:`verify`) and read before anything is restored: a damaged checkpoint
        raises :class:`CheckpointError` and leaves the model, the optimizer and the RNG as they were."""
        from safetensors import safe_open

        p = self.path(step)
        states = p / f"states.rank{self.rank}.safetensors"
        if not states.is_file():
            raise FileNotFoundError(f"{p} has no hidden states for rank {self.rank}: resume with the same world size")
        self.verify(step)
        device = next(model.parameters()).device
        try:
            meta = json.loads((p / "meta.json").read_text())
            weights = load_file(str(p / "model.safetensors"), device=str(device))
            with safe_open(str(p / "optimizer.safetensors"), framework="pt") as f:
                rest = json.loads(f.metadata()["rest"])
            opt_tensors = load_file(str(p / "optimizer.safetensors"), device=str(device))
            hidden, _ = tt.read_states(states)
            rng = load_file(str(p / f"rng.rank{self.rank}.safetensors"))
        except Exception as exc:  # safetensors, json and tracetorch raise assorted types for damaged files
            raise CheckpointError(f"{p}: cannot be read ({type(exc).__name__}: {exc})") from exc
        model.load_state_dict(weights)
        load_optimizer(opt, opt_tensors, rest)
        tt.load_states(model, hidden)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        return meta

    def _barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()
