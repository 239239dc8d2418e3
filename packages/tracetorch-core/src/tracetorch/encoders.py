"""Spike encoders: turn static values or sequences into spike trains, time first.

* :func:`rate` - Bernoulli (rate) coding: at each step an element spikes with probability equal to its value.
* :func:`latency` - one spike per element, earlier for larger values (time-to-first-spike).
* :func:`delta` / :class:`Delta` - events where a signal changed by at least a threshold since the last event
  (+1 up, -1 down); ``Delta`` is the streaming form, a stateful module whose reference value is a hidden
  state like any layer's (zero, save, load).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .state import Stateful

__all__ = ["Delta", "delta", "latency", "rate"]


def rate(x: Tensor, steps: int, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli spikes ``[steps, *x.shape]`` with probability ``clamp(gain * x, 0, 1)`` per step."""
    if steps < 1:
        raise ValueError(f"rate: steps must be >= 1, got {steps}")
    p = (gain * x).clamp(0, 1).expand(steps, *x.shape)
    return torch.bernoulli(p, generator=generator)


def latency(x: Tensor, steps: int, threshold: float = 0.01, normalize: bool = True) -> Tensor:
    """Time-to-first-spike coding ``[steps, *x.shape]``: an element with value ``v`` in [0, 1] spikes once,
    at step ``round((1 - v) * (steps - 1))`` (1 spikes first); values below ``threshold`` never spike.

    ``normalize=False`` uses ``round((1 - v) * steps)`` and lets the smallest values fall off the end.
    """
    if steps < 1:
        raise ValueError(f"latency: steps must be >= 1, got {steps}")
    v = x.clamp(0, 1)
    span = steps - 1 if normalize else steps
    t_fire = torch.round((1 - v) * span).long()
    fires = (v >= threshold) & (t_fire < steps)
    t = torch.arange(steps, device=x.device).view(steps, *([1] * x.ndim))
    return ((t == t_fire) & fires).to(x.dtype if x.is_floating_point() else torch.get_default_dtype())


def delta(x_seq: Tensor, threshold: float = 0.1, off_spikes: bool = True) -> Tensor:
    """Event coding of a sequence ``[T, ...]``: +1 where the signal rose by >= ``threshold`` since the last
    event of that element, -1 where it fell by as much (0 if ``off_spikes=False``). The first step is compared
    with 0. Equivalent to running :class:`Delta` step by step."""
    enc = Delta(threshold, off_spikes)
    return torch.stack([enc(x) for x in x_seq.unbind(0)])


class Delta(Stateful):
    """Streaming delta encoder. State ``ref``: the value at each element's last event (starts at 0)."""

    def __init__(self, threshold: float = 0.1, off_spikes: bool = True) -> None:
        super().__init__()
        if threshold <= 0:
            raise ValueError(f"Delta: threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)
        self.off_spikes = bool(off_spikes)
        self.define_state("ref")

    def forward(self, x: Tensor) -> Tensor:
        ref = self.ref
        if ref is None:
            ref = torch.zeros_like(x)
        elif ref.shape != x.shape:
            from .errors import StateError

            raise StateError(f"Delta: state 'ref' has shape {tuple(ref.shape)}, input has {tuple(x.shape)}")
        change = x - ref
        up = change >= self.threshold
        down = change <= -self.threshold
        fired = up | down if self.off_spikes else up
        self.ref = torch.where(fired, x, ref)
        out = up.to(x.dtype)
        if self.off_spikes:
            out = out - down.to(x.dtype)
        return out

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}, off_spikes={self.off_spikes}"
