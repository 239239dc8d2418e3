"""Spike functions: a Heaviside step forward, a smooth surrogate derivative backward.

``heaviside(v, surrogate, slope)`` returns exactly 0.0 or 1.0 (``v >= 0`` fires, as in the original traceTorch)
in ``v``'s dtype, and backpropagates ``g * surrogate'(v)``. Every surrogate is scaled to peak at 1 for v = 0
with its default ``slope``; larger slopes make it narrower.

| name           | surrogate derivative at v                | default slope |
|----------------|------------------------------------------|---------------|
| ``sigmoid``    | k * s * (1 - s), s = sigmoid(k v)        | 4 (peak 1; the original's ``sigmoid4x``) |
| ``atan``       | (k / 2) / (1 + (pi k v / 2)^2)           | 2 (peak 1)    |
| ``fast_sigmoid`` | 1 / (1 + k |v|)^2 (SuperSpike)         | 10            |
| ``triangle``   | max(0, 1 - k |v|)                         | 1             |
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SURROGATES", "Heaviside", "heaviside", "surrogate_grad"]

SURROGATES: dict[str, float] = {"sigmoid": 4.0, "atan": 2.0, "fast_sigmoid": 10.0, "triangle": 1.0}


def surrogate_grad(v: Tensor, surrogate: str, slope: float) -> Tensor:
    """The surrogate derivative d spike / d v (reference formulas; see the module docstring)."""
    if surrogate == "sigmoid":
        s = torch.sigmoid(slope * v)
        return slope * s * (1 - s)
    if surrogate == "atan":
        return (slope / 2) / (1 + (math.pi * slope / 2 * v) ** 2)
    if surrogate == "fast_sigmoid":
        return 1 / (1 + slope * v.abs()) ** 2
    if surrogate == "triangle":
        return torch.clamp(1 - slope * v.abs(), min=0)
    raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(v: Tensor, surrogate: str, slope: float) -> Tensor:
        out = torch.empty_like(v)
        torch.ge(v, 0, out=out)  # one kernel; writing the bool result into a float tensor casts in place
        return out

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        v, surrogate, slope = inputs
        ctx.save_for_backward(v)
        ctx.surrogate, ctx.slope = surrogate, slope

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v,) = ctx.saved_tensors
        return grad * surrogate_grad(v, ctx.surrogate, ctx.slope), None, None


def heaviside(v: Tensor, surrogate: str = "sigmoid", slope: float | None = None) -> Tensor:
    """Spikes ``(v >= 0)`` as 0.0/1.0 in ``v``'s dtype, with the named surrogate gradient."""
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
    return _Heaviside.apply(v, surrogate, SURROGATES[surrogate] if slope is None else float(slope))


class Heaviside(nn.Module):
    """:func:`heaviside` as a module, to pass as a layer's ``spike_fn`` (``Heaviside("atan", slope=3)``)."""

    def __init__(self, surrogate: str = "sigmoid", slope: float | None = None) -> None:
        super().__init__()
        if surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
        self.surrogate = surrogate
        self.slope = SURROGATES[surrogate] if slope is None else float(slope)

    def forward(self, v: Tensor) -> Tensor:
        return _Heaviside.apply(v, self.surrogate, self.slope)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate!r}, slope={self.slope:g}"
