"""The feature axis of RNN and SSM layers: their cells work on ``[batch, F]`` inputs and ``[batch, F, *trailing]``
states, whatever axis of the per-step input holds the features (``dim=``). These two functions move the features
there and back, folding every other leading axis into one batch axis (no copy where the layout allows)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["features_back", "features_last"]


def features_last(t: Tensor, d: int, trailing: int = 0) -> Tensor:
    """``t`` as ``[batch, F, *trailing]``: its feature axis, axis ``d`` (negative) of its shape without the last
    ``trailing`` axes, moved just before them, and every other axis folded into the batch."""
    if d != -1:
        t = t.movedim(d - trailing, -1 - trailing)
    return t.reshape(-1, *t.shape[t.ndim - 1 - trailing :])


def features_back(t: Tensor, shape: Sequence[int], d: int, trailing: int = 0) -> Tensor:
    """The inverse of :func:`features_last`: ``t`` ``[*lead, batch, F', *trailing]`` back to the layout of ``shape``
    (which may hold the lead axes too) with its own feature size ``F'`` on axis ``d``."""
    moved = list(shape[: len(shape) - trailing])
    moved.append(moved.pop(d))
    t = t.reshape(*moved[:-1], *t.shape[t.ndim - 1 - trailing :])
    return t.movedim(-1 - trailing, d - trailing) if d != -1 else t
