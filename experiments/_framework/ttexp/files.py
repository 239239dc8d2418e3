"""Atomic file writes: every artefact of a run (results, weights, tables, plots, data caches) appears under its final
name complete or not at all, whatever kills the writer, and two processes writing the same file never collide.
The mechanism is the core's (:func:`tracetorch.state_io.atomic_write`, which writes the state files too)."""

from __future__ import annotations

from pathlib import Path

from tracetorch.state_io import atomic_write

__all__ = ["atomic_write", "write_bytes", "write_text"]


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
