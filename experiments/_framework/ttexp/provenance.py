"""Provenance of a result: git sha (and whether the tree was dirty), package versions, machine, config hash."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["git_info", "provenance"]

PACKAGES = ("torch", "tracetorch-core", "tracetorch-zoo", "numpy", "safetensors", "huggingface_hub", "datasets")


def git_info(root: str | Path) -> dict[str, Any]:
    """``{"sha", "dirty"}`` of the repository at ``root`` (``None`` values outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(
    root: str | Path, *, config_hash: str, seed: int, device: str, world_size: int = 1, flush_denormal: bool = False
) -> dict[str, Any]:
    """Everything needed to say where a result came from (``flush_denormal``: subnormals flushed to zero, recorded
    only when on)."""
    out = {
        "git": git_info(root),
        "config_hash": config_hash,
        "seed": seed,
        "device": device,
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if flush_denormal:
        out["flush_denormal"] = True
    return out
