"""The trace op: the leaky traces of the spiking types over a whole sequence, the membrane of the 8 ``LI`` types and
the synaptic stage (S) of every S type, one autograd node per trace stage. Per element and step::

    h <- a h + c x                  c = 1 - a (EMA) or 1
    D: h+ <- a+ h+ + c+ [x]+,  h- <- a- h- + c- [x]-,  y = h+ + h-      (else y = h)

Everything about it is in this folder:

* the reference is the layers' step loop over ``functional.neuron_step``; :func:`trace_sequence_torch` composes
  :func:`tracetorch.ops.linear_scan` (the torch path, any device and dtype);
* ``native.py``, ``native_trace.inc``: C kernels for the CPU (built by the fire op's machinery), one pass per
  direction, no ``[T, ...]`` intermediates; ``custom_ops.py`` registers them as ``torch.library`` ops, which
  compiled graphs use (``tracetorch::trace_native``);
* ``triton.py``, ``triton_kernels.py``: the same kernels in Triton for CUDA;
* ``flat.py``: the autograd glue both flat kernels share.

:func:`choose_kernels` is the one place that picks among them (:func:`why_not_flat` says why not), within what the
backend allows (:mod:`tracetorch.ops.backend`); all give the same outputs and final states (bit for bit on the
CPU).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .. import backend
from ..fire import native as _fire_native
from ..linear_scan import linear_scan
from . import native, triton
from .custom_ops import trace_native_compiled
from .flat import TraceFlat
from .native import has_trace_variant, trace_variant

__all__ = ["choose_kernels", "trace_sequence", "trace_sequence_torch", "why_not_flat", "why_not_native"]

FLAT_DTYPES = (torch.float32, torch.float64)


def why_not_flat(x: Tensor, tensors: list[Tensor], dual: bool, ema: bool) -> str | None:
    """Why the flat trace kernels (native C on the CPU, Triton on CUDA) do not take this call (``None`` when they
    do): float32/64 throughout, one device, a backend that allows them, a built library or an importable Triton."""
    cpu = x.device.type == "cpu"
    reason = backend.disabled_reason("native" if cpu else "triton")
    if reason is not None:
        return f"{reason} forbids the {'native' if cpu else 'Triton'} kernels"
    if x.dtype not in FLAT_DTYPES or any(t.dtype != x.dtype or t.device != x.device for t in tensors):
        return f"dtypes {sorted({str(t.dtype) for t in (x, *tensors)})} (the flat kernels take one of float32/64)"
    if not cpu:
        return None if triton.usable(x) else f"Triton does not take it ({triton.triton_status()})"
    if not has_trace_variant(trace_variant(dual, ema), x.dtype):
        return f"no native trace kernel here (native kernels: {_fire_native.native_status()})"
    return None


def why_not_native(x: Tensor, tensors: list[Tensor], dual: bool, ema: bool) -> str | None:
    """Why the native (CPU) trace kernels do not take this call (``None`` when they do)."""
    return "not on the CPU" if x.device.type != "cpu" else why_not_flat(x, tensors, dual, ema)


def choose_kernels(x: Tensor, tensors: list[Tensor], dual: bool, ema: bool):
    """The flat kernels that take this call, :mod:`.native` on the CPU or :mod:`.triton` on CUDA, or ``None``: then
    the torch path runs (:func:`why_not_flat` says why)."""
    if why_not_flat(x, tensors, dual, ema) is not None:
        return None
    return native if x.device.type == "cpu" else triton


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
    kernels = choose_kernels(x, tensors, dual, ema)
    if kernels is native and torch.compiler.is_compiling():  # dynamo traces no ctypes call: one custom op
        return trace_native_compiled(x, a, h0, ema, na, nh0)
    if kernels is None or torch.compiler.is_compiling():
        return trace_sequence_torch(x, a, h0, ema, na, nh0)
    try:
        return TraceFlat.apply(x, a, h0, na, nh0, ema, kernels)
    except Exception as exc:
        if kernels is not triton:
            raise
        # a Triton kernel that does not compile or launch here: say so once, then the torch path runs
        triton.disable(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"tracetorch: Triton trace kernels disabled ({exc}); using linear scans", RuntimeWarning,
                      stacklevel=2)  # fmt: skip
        return trace_sequence_torch(x, a, h0, ema, na, nh0)
