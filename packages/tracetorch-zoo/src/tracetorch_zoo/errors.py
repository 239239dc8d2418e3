"""Exceptions of the zoo; each says what was expected and what was found."""

from __future__ import annotations

__all__ = ["IncompatibleFileError", "UnknownArchitectureError", "ZooError"]


class ZooError(Exception):
    """Base class of the zoo's errors."""


class UnknownArchitectureError(ZooError, KeyError):
    """A config names an architecture that is not registered (close names are suggested)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class IncompatibleFileError(ZooError, ValueError):
    """A file does not fit: wrong format, another architecture's snapshot, hash mismatch, a newer format,
    or a tracetorch-core older than the one that wrote it."""
