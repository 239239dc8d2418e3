"""Exceptions raised by tracetorch. Both subclass built-in exceptions, so generic handlers still catch them."""

from __future__ import annotations

__all__ = ["StateError", "StateLoadError"]


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
