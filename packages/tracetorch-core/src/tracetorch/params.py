"""Constrained parameters: stored raw, used through a smooth function.

A decay must stay in [0, 1] and a threshold must stay positive while an optimiser moves them freely. So the
layer stores an unconstrained *raw* tensor and the math uses ``constraint.forward(raw)``; the initial value is
put through ``constraint.inverse`` once. The same code path serves learnable parameters (``nn.Parameter``)
and fixed ones (buffers): there is no ``if learnable`` in any layer's math.

Each constraint also knows its domain, so a bad initial value is a ``ValueError`` that names the parameter,
and a value on the closed boundary (``beta=1.0`` is a perfect integrator) is accepted for a *fixed* parameter
but refused for a learnable one, whose gradient would be exactly zero there forever.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CONSTRAINTS", "Constraint", "Exp", "Identity", "Sigmoid", "Softplus", "get_constraint"]


class Constraint:
    """Maps an unconstrained raw tensor to a parameter's effective value.

    Subclasses set ``name``, the open domain ``(low, high)`` of effective values that can be learned, and
    whether the closed boundary may be used for fixed parameters.
    """

    name = "constraint"
    low = -math.inf
    high = math.inf
    boundary_ok_when_fixed = False

    def forward(self, raw: Tensor) -> Tensor:
        raise NotImplementedError

    def inverse(self, value: Tensor) -> Tensor:
        raise NotImplementedError

    def check(self, value: Tensor, learnable: bool, owner: str, name: str) -> None:
        """Raise ``ValueError`` if ``value`` is outside the domain (closed domain for fixed parameters)."""
        if value.is_meta:  # a model built on the meta device (to check shapes) has no values to check
            return
        what = f"{owner}: {name}"
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{what} must be finite, got {_show(value)}")
        closed = self.boundary_ok_when_fixed and not learnable
        lo_bad = (value < self.low) if closed else (value <= self.low)
        hi_bad = (value > self.high) if closed else (value >= self.high)
        if bool(lo_bad.any()) or bool(hi_bad.any()):
            interval = _interval(self.low, self.high, closed)
            hint = ""
            if self.boundary_ok_when_fixed and learnable:
                on_edge = (value == self.low) | (value == self.high)
                if bool(on_edge.any()):
                    hint = (
                        f"; a value on the boundary of {_interval(self.low, self.high, True)} has zero gradient "
                        f"through the constraint, so it can only be fixed: pass learn_{name}=False"
                    )
            raise ValueError(f"{what} must be in {interval} ({self.name} constraint), got {_show(value)}{hint}")

    def __repr__(self) -> str:
        return self.name


class Identity(Constraint):
    """No constraint: the raw tensor is the value (recurrent weights, scales, biases)."""

    name = "identity"

    def forward(self, raw: Tensor) -> Tensor:
        return raw

    def inverse(self, value: Tensor) -> Tensor:
        return value


class Sigmoid(Constraint):
    """Decays and other values in (0, 1): ``value = sigmoid(raw)``, ``raw = logit(value)``."""

    name = "sigmoid"
    low, high = 0.0, 1.0
    boundary_ok_when_fixed = True  # logit(1) = inf and sigmoid(inf) = 1 exactly: a fixed perfect integrator

    def forward(self, raw: Tensor) -> Tensor:
        return torch.sigmoid(raw)

    def inverse(self, value: Tensor) -> Tensor:
        return torch.logit(value.double()).to(value.dtype)


class Softplus(Constraint):
    """Thresholds and other positive values: ``value = softplus(raw)``."""

    name = "softplus"
    low = 0.0
    boundary_ok_when_fixed = True  # softplus(-inf) = 0: a fixed zero threshold

    def forward(self, raw: Tensor) -> Tensor:
        return torch.nn.functional.softplus(raw)

    def inverse(self, value: Tensor) -> Tensor:
        v = value.double()
        # log(expm1(v)) written so that it neither overflows for large v nor loses precision for small v.
        return (v + torch.log(-torch.expm1(-v))).to(value.dtype)


class Exp(Constraint):
    """Positive scales kept in log space: ``value = exp(raw)``."""

    name = "exp"
    low = 0.0

    def forward(self, raw: Tensor) -> Tensor:
        return torch.exp(raw)

    def inverse(self, value: Tensor) -> Tensor:
        return torch.log(value.double()).to(value.dtype)


CONSTRAINTS: dict[str, Constraint] = {c.name: c for c in (Identity(), Sigmoid(), Softplus(), Exp())}


def get_constraint(spec: str | Constraint | None) -> Constraint:
    """Return the constraint named by ``spec`` (``None`` means identity)."""
    if spec is None:
        return CONSTRAINTS["identity"]
    if isinstance(spec, Constraint):
        return spec
    try:
        return CONSTRAINTS[spec]
    except KeyError:
        raise ValueError(f"unknown constraint {spec!r}; choose one of {sorted(CONSTRAINTS)}") from None


def _interval(lo: float, hi: float, closed: bool) -> str:
    left = "[" if closed and math.isfinite(lo) else "("
    right = "]" if closed and math.isfinite(hi) else ")"
    return f"{left}{lo:g}, {hi:g}{right}"


def _show(value: Tensor) -> str:
    flat = value.flatten()
    if bool((flat == flat[0]).all()):
        return f"{flat[0].item():g}" + ("" if value.numel() == 1 else f" (all {value.numel()} values)")
    return f"a tensor with min {value.min().item():g} and max {value.max().item():g}"
