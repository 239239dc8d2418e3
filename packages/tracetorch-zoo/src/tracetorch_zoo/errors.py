"""Exceptions of the zoo; each says what was expected, what was found and what to do."""

from __future__ import annotations

__all__ = ["HubError", "IncompatibleFileError", "InvalidNameError", "UnknownArchitectureError", "ZooError"]


class ZooError(Exception):
    """Base class of the zoo's errors."""


class UnknownArchitectureError(ZooError, KeyError):
    """A config names an architecture that is not registered (close names are suggested)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class IncompatibleFileError(ZooError, ValueError):
    """A file does not fit: wrong format, another architecture's snapshot, hash mismatch, a newer format,
    a config that cannot build a model, weights whose shapes differ from the config's, or a tracetorch-core
    older than the one that wrote it."""


class HubError(ZooError):
    """The Hub could not give what was asked: an unreachable endpoint, a repository or revision that does not
    exist, no access, or offline mode with nothing in the cache. The message says which and what to do."""


class InvalidNameError(ZooError, ValueError):
    """A snapshot or entry name that is not a plain name (a path, ``..``, a separator): names never reach
    outside the folder they name."""
