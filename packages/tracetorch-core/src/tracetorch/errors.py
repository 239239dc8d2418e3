"""Exceptions raised by tracetorch. All subclass built-in exceptions, so generic handlers still catch them."""

from __future__ import annotations

__all__ = ["ExportError", "StateError", "StateLoadError", "StateSaveError"]


class StateError(RuntimeError):
    """A hidden state does not fit the input it is asked to continue with.

    Raised when the batch size, feature size, dtype or device changes in the middle of a stream. States are
    never re-initialised silently: call ``zero_states()`` to start a new stream.
    """


class StateLoadError(ValueError):
    """A state file or state dict does not fit the model it is loaded into (keys, shapes or format).

    Loading validates everything before assigning anything, so after this error the model's states are
    exactly what they were before the call.
    """


class StateSaveError(ValueError):
    """A state snapshot cannot be written: a value that is neither a tensor nor ``None``, or a tensor without data
    to write (on the meta device, or not strided). Nothing is written: an existing file stays as it was."""


class ExportError(RuntimeError):
    """A stateful model cannot be exported as asked: exporting or tracing a layer with its hidden states inside it
    (they would be frozen into the graph), or an export of its step that failed. Use :mod:`tracetorch.export`,
    which makes the states graph inputs and outputs."""
