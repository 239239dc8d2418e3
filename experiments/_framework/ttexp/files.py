"""Atomic file writes: every artefact of a run (results, weights, tables, plots, data caches) appears under its final
name complete or not at all, whatever kills the writer, and two processes writing the same file never collide."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "write_bytes", "write_text"]


@contextlib.contextmanager
def atomic_write(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; write it inside the block, and on a normal exit it is synced to
    disk and renamed to ``path`` in one step. On any exception (Ctrl-C included) the temporary file is removed and
    ``path`` is left as it was.

    The temporary name is unique per call (two writers never share it) and ends in ``suffix`` (for writers that
    choose a format by extension, e.g. ``np.savez`` wants ``.npz``). Its mode follows the umask, like any new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, where mkstemp would give 0600
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)  # a writer may have replaced the file
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
