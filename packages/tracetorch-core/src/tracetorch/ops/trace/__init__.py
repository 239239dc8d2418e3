"""The trace op: the leaky traces of the spiking types over a whole sequence, the membrane of the 8 ``LI`` types and
the synaptic stage (S) of every S type, one autograd node per trace stage. Per element and step::

    h <- a h + c x                  c = 1 - a (EMA) or 1
    D: h+ <- a+ h+ + c+ [x]+,  h- <- a- h- + c- [x]-,  y = h+ + h-      (else y = h)

Everything about it is in this folder:

* the reference is the layers' step loop over ``functional.neuron_step``; :func:`trace_sequence_torch` composes
  :func:`tracetorch.ops.linear_scan` (the torch path, any device and dtype);
* ``native.py``, ``native_trace.inc``: C kernels for the CPU (built by the fire op's machinery), one pass per
  direction, no ``[T, ...]`` intermediates; ``custom_ops.py`` registers them as ``torch.library`` ops, which
  compiled graphs use (``tracetorch::trace_native``).

:func:`why_not_native` is the one place that picks between them, within what the backend allows
(:mod:`tracetorch.ops.backend`); both give the same outputs and final states bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backend
from ..fire import native as _fire_native
from ..linear_scan import linear_scan
from .custom_ops import trace_native_compiled
from .native import TraceNative, has_trace_variant, trace_variant

__all__ = ["trace_sequence", "trace_sequence_torch", "why_not_native"]

NATIVE_DTYPES = (torch.float32, torch.float64)


def why_not_native(x: Tensor, tensors: list[Tensor], dual: bool, ema: bool) -> str | None:
    """Why the native trace kernels do not take this call (``None`` when they do): the CPU, float32/64 throughout,
    a backend that allows them, and a built library."""
    if x.device.type != "cpu":
        return "not on the CPU"
    reason = backend.disabled_reason("native")
    if reason is not None:
        return f"{reason} forbids the native kernels"
    if x.dtype not in NATIVE_DTYPES or any(t.dtype != x.dtype or t.device != x.device for t in tensors):
        return f"dtypes {sorted({str(t.dtype) for t in (x, *tensors)})} (the native kernels take one of float32/64)"
    if not has_trace_variant(trace_variant(dual, ema), x.dtype):
        return f"no native trace kernel here (native kernels: {_fire_native.native_status()})"
    return None


def trace_sequence_torch(
    x: Tensor, a: Tensor, h0: Tensor, ema: bool, na: Tensor | None = None, nh0: Tensor | None = None
) -> tuple[Tensor, ...]:
    """The torch path of :func:`trace_sequence`: the sign split and the EMA scaling as tensor ops, then one
    :func:`linear_scan` per trace."""

    def scan(drive: Tensor, decay: Tensor, h: Tensor) -> Tensor:
        return linear_scan((1 - decay) * drive if ema else drive, decay, h)

    if na is None:
        y = scan(x, a, h0)
        return y, y[-1]
    pos, neg = scan(x.clamp(min=0), a, h0), scan(x.clamp(max=0), na, nh0)
    return pos + neg, pos[-1], neg[-1]


def trace_sequence(
    x: Tensor, a: Tensor, h0: Tensor, ema: bool, na: Tensor | None = None, nh0: Tensor | None = None
) -> tuple[Tensor, ...]:
    """``(y [T, ...], h_T)``, or under D (``na``, ``nh0`` given) ``(y, h+_T, h-_T)``: the trace of ``x [T, ...]``
    with decay ``a`` (broadcastable to a step) from ``h0`` (see the module docstring). A final state may share
    memory with ``y`` (copy it before writing into either)."""
    dual = na is not None
    tensors = [a, h0] + ([na, nh0] if dual else [])
    if why_not_native(x, tensors, dual, ema) is None:
        if torch.compiler.is_compiling():  # dynamo traces no ctypes call: the kernels as one custom op
            return trace_native_compiled(x, a, h0, ema, na, nh0)
        return TraceNative.apply(x, a, h0, na, nh0, ema)
    return trace_sequence_torch(x, a, h0, ema, na, nh0)
