"""Local text corpora for the experiments: CrossWire SWORD modules dumped with Debian's ``diatheke``, read back
through ``datasets`` (offline), checked against a pinned sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .files import write_bytes

__all__ = ["read_text", "sword_dump"]


def sword_dump(
    module: str,
    key: str,
    package: str,
    path: Path,
    *,
    who: str,
    transform: Callable[[bytes], bytes] | None = None,
) -> Path:
    """Dump SWORD module ``module`` (keys ``key``) to ``path`` with ``diatheke -f plain`` once; later calls reuse the
    file. ``transform`` rewrites the raw dump before it is written. The write is atomic."""
    if path.is_file():
        return path
    if shutil.which("diatheke") is None:
        raise SystemExit(
            f"{who}: the text comes from the SWORD module {module!r} via diatheke, which is not installed. Install "
            f"it with: apt-get install diatheke {package}  (Debian packages), or run the smoke variant, which uses "
            "a shipped excerpt."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = subprocess.run(["diatheke", "-b", module, "-f", "plain", "-k", key], capture_output=True, check=True).stdout
    return write_bytes(path, transform(raw) if transform else raw)  # atomic: parallel parts may dump it at once


def read_text(path: Path, cache: Path, *, sha256: str = "", who: str) -> tuple[bytes, str]:
    """``(utf-8 bytes, sha256)`` of a local text file read through ``datasets`` (one document, offline), checked
    against ``sha256`` when it is given."""
    import datasets

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a local file: nothing to fetch
    ds = datasets.load_dataset("text", data_files={"t": str(path)}, sample_by="document", cache_dir=str(cache))
    text = "".join(ds["t"]["text"]).encode("utf-8")
    digest = hashlib.sha256(text).hexdigest()
    if sha256 and digest != sha256:
        raise SystemExit(
            f"{who}: {path} has sha256 {digest}, the config pins {sha256} (another package version?). Delete the "
            "file to re-dump it, or make a new experiment version for the new data."
        )
    return text, digest
