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

import contextlib
import math
import operator
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CONSTRAINTS",
    "ConstrainedParameters",
    "Constraint",
    "Exp",
    "Identity",
    "Sigmoid",
    "Softplus",
    "get_constraint",
    "normal_tensors",
    "stamp",
]


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
        """The effective value of a raw (stored, unconstrained) tensor."""
        raise NotImplementedError

    def inverse(self, value: Tensor) -> Tensor:
        """The raw tensor whose effective value is ``value`` (computed in float64 where it loses precision)."""
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


_version = operator.attrgetter("_version")


def stamp(tensors) -> tuple:
    """A flat tuple that changes whenever a tensor's values may have: identity, version counter (in-place updates:
    optimiser steps, ``load_state_dict``) and data pointer (new storage behind the same object: ``.data =``,
    ``.to()``). Every cache derived from parameters keys on it and holds the tensors it stamped, so that no new
    tensor can reuse an id; the tuple compares in one C call."""
    return (*map(id, tensors), *map(_version, tensors), *map(Tensor.data_ptr, tensors))


@contextlib.contextmanager
def normal_tensors() -> Iterator[None]:
    """Autograd off, and tensors made inside are normal ones even within ``torch.inference_mode()``: for values
    cached across calls. An inference tensor kept in a cache breaks the first training step after the cache was
    filled under inference mode ("Inference tensors cannot be saved for backward")."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class ConstrainedParameters(nn.Module):
    """The constrained-parameter machinery of a layer (mixed into :class:`tracetorch.Layer`): parameters defined by
    name, stored raw (``raw_<name>``, a parameter or a buffer) and read through their constraint as ``layer.<name>``
    (reading happens in ``Stateful.__getattr__``; ``layer.<name> = v`` sets through the inverse), and their folding
    into constants for inference (``TTcompile``). The rank-1 size is the layer's ``features``."""

    features: int

    def __init__(self) -> None:
        super().__init__()
        self._constraints: dict[str, Constraint] = {}
        self._folded: dict[str, Tensor] = {}
        self._warned_folded = False
        self.register_load_state_dict_post_hook(_refold_after_load)

    def define_parameter(
        self,
        name: str,
        value: float | Tensor,
        *,
        rank: int = 1,
        learnable: bool = True,
        constraint: str | Constraint | None = None,
    ) -> None:
        """Define parameter ``name``: stored as ``raw_<name>``, read as ``layer.<name>`` through ``constraint``.

        Args:
            value: a number or a 0-d tensor (fills the parameter) or, for ``rank=1``, a 1-d tensor of
                ``features`` values.
            rank: 0 for one shared scalar, 1 for one value per neuron.
            learnable: ``nn.Parameter`` if True, else a buffer (saved in ``state_dict``, not trained).
            constraint: ``None``/``"identity"``, ``"sigmoid"`` (decays), ``"softplus"`` (thresholds),
                ``"exp"`` or a :class:`~tracetorch.params.Constraint`.
        """
        if not name.isidentifier():
            raise ValueError(f"parameter name must be a Python identifier, got {name!r}")
        if name in self._constraints or name in self._states or hasattr(type(self), name) or name in self.__dict__:
            raise ValueError(f"{type(self).__name__} already has an attribute called {name!r}")
        c = get_constraint(constraint)
        t = self._init_tensor(name, value, rank)
        c.check(t, learnable, type(self).__name__, name)
        raw = c.inverse(t).detach().clone()
        if learnable:
            self.register_parameter(f"raw_{name}", nn.Parameter(raw))
        else:
            self.register_buffer(f"raw_{name}", raw)
        self._constraints[name] = c

    def define_decay(self, name: str, value: float | Tensor, *, rank: int = 1, learnable: bool = True) -> None:
        """A decay in [0, 1] (``sigmoid`` constraint); 1 is allowed only for a fixed (non-learnable) decay."""
        self.define_parameter(name, value, rank=rank, learnable=learnable, constraint="sigmoid")

    def define_threshold(self, name: str, value: float | Tensor, *, rank: int = 1, learnable: bool = True) -> None:
        """A positive threshold (``softplus`` constraint); 0 is allowed only for a fixed threshold."""
        self.define_parameter(name, value, rank=rank, learnable=learnable, constraint="softplus")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the defined (constrained) parameters, in definition order."""
        return tuple(self._constraints)

    def raw(self, name: str) -> Tensor:
        """The stored raw tensor of parameter ``name`` (an ``nn.Parameter`` if learnable, else a buffer)."""
        key = f"raw_{name}"
        t = self._parameters.get(key)
        return t if t is not None else self._buffers[key]

    def effective(self, name: str) -> Tensor:
        """The effective value of parameter ``name`` (shape ``[]`` or ``[features]``)."""
        folded = self._folded.get(name)
        if folded is not None:
            return folded
        return self._constraints[name].forward(self.raw(name))

    def set_parameter(self, name: str, value: float | Tensor) -> None:
        """Set parameter ``name`` to an effective ``value`` (goes through the constraint's inverse)."""
        raw = self.raw(name)
        c = self._constraints[name]
        t = self._init_tensor(name, value, raw.ndim)
        c.check(t, isinstance(raw, nn.Parameter) and raw.requires_grad, type(self).__name__, name)
        with torch.no_grad():
            raw.copy_(c.inverse(t.to(dtype=raw.dtype, device=raw.device)))
        if name in self._folded:
            self._fold(True)

    def _init_tensor(self, name: str, value: float | Tensor, rank: int) -> Tensor:
        what = f"{type(self).__name__}: {name}"
        if rank not in (0, 1):
            raise ValueError(f"{what}: rank must be 0 (scalar) or 1 (per neuron), got {rank!r}")
        if isinstance(value, Tensor):
            t = value.detach()
            if not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            t = torch.tensor(float(value), dtype=torch.get_default_dtype())
        else:
            raise TypeError(f"{what}: expected a number or a tensor, got {type(value).__name__}")
        if t.ndim == 0:
            return t.expand(self.features).clone() if rank == 1 else t.clone()
        if t.ndim == 1 and rank == 1:
            if t.numel() != self.features:
                raise ValueError(f"{what}: expected {self.features} values (one per neuron), got {t.numel()}")
            return t.clone()
        raise ValueError(
            f"{what}: a rank-{rank} parameter takes a number"
            + (f" or a 1-d tensor of {self.features} values" if rank == 1 else " or a 0-d tensor")
            + f", got a tensor of shape {tuple(t.shape)}"
        )

    def _fold(self, on: bool) -> None:
        """Fold constrained parameters into cached effective values (``on``) or drop the cache.

        The raw tensors are untouched, so ``state_dict`` keys, optimiser references and exact values survive
        a TTcompile/TTdecompile round trip (no inverse is ever applied to a folded value).
        """
        self._folded = {}
        if on:
            with normal_tensors():
                self._folded = {n: c.forward(self.raw(n)).detach() for n, c in self._constraints.items()}
        self._warned_folded = False

    def _warn_if_training_folded(self) -> None:
        if any(self.raw(n).requires_grad for n in self._folded):
            self._warned_folded = True
            warnings.warn(
                f"{type(self).__name__} is TTcompiled: its constrained parameters are folded constants and "
                "receive no gradient. Call TTdecompile() before training.",
                stacklevel=3,
            )

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._folded:
            self._fold(True)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        constraints = self.__dict__.get("_constraints")
        if constraints is not None and name in constraints:
            self.set_parameter(name, value)
            return
        super().__setattr__(name, value)


def _refold_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    if isinstance(module, ConstrainedParameters) and module._folded:
        module._fold(True)
