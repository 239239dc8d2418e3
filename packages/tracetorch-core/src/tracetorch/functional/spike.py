"""Spike functions: what a neuron emits for ``v = membrane - threshold``, and the gradient it passes back.

Forward modes (``mode``):

| mode          | forward                                    | use |
|---------------|--------------------------------------------|-----|
| ``heaviside`` | exactly 1.0 where ``v >= 0`` else 0.0       | binary spikes (default) |
| ``round``     | ``round(sigmoid(k v))``: 1 where ``v > 0``  | straight-through rounding (original 0.13-0.16) |
| ``stochastic``| Bernoulli sample with p = ``sigmoid(k v)``  | stochastic spikes (original 0.16 default) |
| ``smooth``    | ``sigmoid(k v)``, continuous                | no spikes at all (original 0.19 default) |

Backward, for every mode, multiplies the incoming gradient by a surrogate derivative (``surrogate``); each is
scaled to peak at 1 for v = 0 with its default ``slope`` k (larger = narrower). ``smooth``, ``round`` and
``stochastic`` take ``sigmoid``: their backward is then the exact derivative of ``sigmoid(k v)``.

| surrogate        | d spike / d v                          | default k |
|------------------|----------------------------------------|-----------|
| ``sigmoid``      | k s (1 - s), s = sigmoid(k v)          | 4 (the original's ``sigmoid4x``) |
| ``atan``         | (k / 2) / (1 + (pi k v / 2)^2)         | 2 |
| ``fast_sigmoid`` | 1 / (1 + k abs(v))^2 (SuperSpike)      | 10 |
| ``triangle``     | max(0, 1 - k abs(v))                   | 1 |

Layers take ``spike_fn=`` as a surrogate name (Heaviside with that surrogate), a mode name (``"round"``,
``"stochastic"``, ``"smooth"``, sigmoid surrogate), a :class:`SpikeFunction`, or any callable ``v -> y``
(then fused fast paths fall back to the reference loop).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MODES", "SURROGATES", "Heaviside", "SpikeFunction", "heaviside", "make_spike_fn", "spike", "surrogate_grad"]

SURROGATES: dict[str, float] = {"sigmoid": 4.0, "atan": 2.0, "fast_sigmoid": 10.0, "triangle": 1.0}
MODES = ("heaviside", "round", "stochastic", "smooth")


def surrogate_grad(v: Tensor, surrogate: str, slope: float) -> Tensor:
    """The surrogate derivative d spike / d v (formulas in the module docstring)."""
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


def fire(v: Tensor, mode: str, slope: float) -> Tensor:
    """The forward value of a spike function (no autograd)."""
    if mode == "heaviside":
        out = torch.empty_like(v)
        torch.ge(v, 0, out=out)  # one kernel: the bool result is written straight into a float tensor
        return out
    if mode == "round":
        return torch.round(torch.sigmoid(slope * v))
    if mode == "stochastic":
        return torch.bernoulli(torch.sigmoid(slope * v))
    if mode == "smooth":
        return torch.sigmoid(slope * v)
    raise ValueError(f"unknown spike mode {mode!r}; choose one of {MODES}")


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(v: Tensor, mode: str, surrogate: str, slope: float) -> Tensor:
        return fire(v, mode, slope)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        v, _, surrogate, slope = inputs
        ctx.save_for_backward(v)
        ctx.surrogate, ctx.slope = surrogate, slope

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v,) = ctx.saved_tensors
        return grad * surrogate_grad(v, ctx.surrogate, ctx.slope), None, None, None


def _check(mode: str, surrogate: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown spike mode {mode!r}; choose one of {MODES}")
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
    if mode != "heaviside" and surrogate != "sigmoid":
        raise ValueError(f"spike mode {mode!r} is defined through sigmoid(k v): its surrogate must be 'sigmoid'")


def spike(v: Tensor, mode: str = "heaviside", surrogate: str = "sigmoid", slope: float | None = None) -> Tensor:
    """Spikes for ``v = membrane - threshold`` in ``v``'s dtype; backward uses the surrogate derivative."""
    _check(mode, surrogate)
    return _Spike.apply(v, mode, surrogate, SURROGATES[surrogate] if slope is None else float(slope))


def heaviside(v: Tensor, surrogate: str = "sigmoid", slope: float | None = None) -> Tensor:
    """Binary spikes ``(v >= 0)`` as 0.0/1.0 with the named surrogate gradient."""
    return spike(v, "heaviside", surrogate, slope)


class SpikeFunction(nn.Module):
    """A spike function as a module: ``SpikeFunction("stochastic")``, ``SpikeFunction(surrogate="atan")``.

    Exposes :meth:`fire` and :meth:`grad` so that fused sequence kernels can run it without autograd.
    """

    def __init__(self, mode: str = "heaviside", surrogate: str = "sigmoid", slope: float | None = None) -> None:
        super().__init__()
        _check(mode, surrogate)
        self.mode, self.surrogate = mode, surrogate
        self.slope = SURROGATES[surrogate] if slope is None else float(slope)

    def forward(self, v: Tensor) -> Tensor:
        return _Spike.apply(v, self.mode, self.surrogate, self.slope)

    def fire(self, v: Tensor) -> Tensor:
        """Forward value without autograd."""
        return fire(v, self.mode, self.slope)

    def grad(self, v: Tensor) -> Tensor:
        """Surrogate derivative at ``v``."""
        return surrogate_grad(v, self.surrogate, self.slope)

    @property
    def deterministic(self) -> bool:
        """Whether the forward pass is deterministic (every mode but ``"stochastic"``)."""
        return self.mode != "stochastic"

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, surrogate={self.surrogate!r}, slope={self.slope:g}"


def Heaviside(surrogate: str = "sigmoid", slope: float | None = None) -> SpikeFunction:  # noqa: N802
    """Binary spikes with the named surrogate gradient, as a module to pass as ``spike_fn``."""
    return SpikeFunction("heaviside", surrogate, slope)


def make_spike_fn(spec) -> nn.Module | object:
    """Resolve a layer's ``spike_fn`` argument: a surrogate name, a mode name, a module, or a callable."""
    if isinstance(spec, str):
        if spec in SURROGATES:
            return SpikeFunction("heaviside", spec)
        if spec in MODES:
            return SpikeFunction(spec, "sigmoid")
        raise ValueError(f"unknown spike_fn {spec!r}; choose a surrogate {sorted(SURROGATES)} or a mode {MODES}")
    if callable(spec):
        return spec
    raise TypeError(f"spike_fn must be a name, a SpikeFunction or a callable, got {type(spec).__name__}")
