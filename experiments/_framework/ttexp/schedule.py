"""Learning-rate schedule shared by the experiments: linear warm-up, then cosine decay.

``lr(step) = lr * (step + 1) / warmup`` for ``step < warmup``, then ``lo + (lr - lo) (1 + cos(pi p)) / 2`` with
``p = (step - warmup) / (total - warmup)`` clipped at 1 and ``lo = lr * min_lr_ratio``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["lr_at"]


def lr_at(step: int, tc: dict[str, Any], total: int | None = None) -> float:
    """The learning rate of ``step`` (0-based) for a ``[train]`` table with ``lr``, ``warmup``, ``min_lr_ratio``
    and ``steps`` (or the run's length given as ``total``)."""
    total = tc["steps"] if total is None else total
    if step < tc["warmup"]:
        return tc["lr"] * (step + 1) / tc["warmup"]
    p = (step - tc["warmup"]) / max(1, total - tc["warmup"])
    lo = tc["lr"] * tc["min_lr_ratio"]
    return lo + 0.5 * (tc["lr"] - lo) * (1 + math.cos(math.pi * min(1.0, p)))
