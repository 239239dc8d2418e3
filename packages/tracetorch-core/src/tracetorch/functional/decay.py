"""Conversions between a per-step decay and the time constants people think in.

``decay = exp(-ln 2 / halflife) = exp(-1 / tau) = 1 - 1 / horizon``. Work on floats and on tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "decay_to_halflife",
    "decay_to_horizon",
    "decay_to_tau",
    "halflife_to_decay",
    "horizon_to_decay",
    "tau_to_decay",
]

Number = float | Tensor


def _exp(v: Number) -> Number:
    return torch.exp(v) if isinstance(v, Tensor) else math.exp(v)


def _log(v: Number) -> Number:
    return torch.log(v) if isinstance(v, Tensor) else math.log(v)


def halflife_to_decay(halflife: Number) -> Number:
    """Steps for the state to halve -> decay per step."""
    return _exp(-math.log(2) / halflife)


def decay_to_halflife(decay: Number) -> Number:
    """Decay per step -> steps for the state to halve, ``-ln 2 / ln(decay)``."""
    return -math.log(2) / _log(decay)


def tau_to_decay(tau: Number) -> Number:
    """Time constant in steps (e-folding) -> decay per step."""
    return _exp(-1 / tau)


def decay_to_tau(decay: Number) -> Number:
    """Decay per step -> time constant in steps (e-folding), ``-1 / ln(decay)``."""
    return -1 / _log(decay)


def horizon_to_decay(horizon: Number) -> Number:
    """Averaging horizon of an EMA in steps -> decay (``1 - 1/horizon``)."""
    return 1 - 1 / horizon


def decay_to_horizon(decay: Number) -> Number:
    """Decay -> averaging horizon of an EMA in steps, ``1 / (1 - decay)``."""
    return 1 / (1 - decay)
