"""The native CPU kernels of the trace op (``native_trace.inc``, built by the fire op's machinery,
:func:`tracetorch.ops.fire.native.kernel_pair`): :func:`trace_forward` and :func:`trace_backward` launch them
(the autograd glue, shared with the Triton kernels, is :mod:`.flat`).

One pass over memory per direction, time innermost, as the firing kernels: the sign split, the EMA scaling, the
recurrence and (under D) the sum of the two traces happen per element, so no ``[T, ...]`` intermediate is made
(the torch path makes five to ten, and on this machine the page faults of fresh large buffers cost more than the
arithmetic). Outputs and final states are bit-identical to the torch path (the same operations: ``(1 - a) * x``,
then ``addcmul``); gradients agree to rounding (parameter gradients are summed in another order).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from ..fire import native as _native

__all__ = [
    "TRACE_BWD_IO",
    "TRACE_FWD_IO",
    "TRACE_PARAMS",
    "flat_params",
    "has_trace_variant",
    "trace_backward",
    "trace_forward",
    "trace_kernels",
    "trace_variant",
]

_CI64, _CPTR = _native._CI64, _native._CPTR

TRACE_PARAMS = ("a", "one_m_a", "na", "one_m_na")  # the parameter pack's slots (native_trace.inc)
TRACE_FWD_IO = ("x", "h0", "nh0", "Y", "H", "NH", "hT", "nhT")
TRACE_BWD_IO = ("gY", "x", "H", "NH", "h0", "nh0", "ghT", "gnhT", "gX", "gh0", "gnh0")


def trace_variant(dual: bool, ema: bool) -> str:
    """``li``, ``lie`` (EMA), ``dli``, ``dlie``: the kernel variant of a trace."""
    return "d" * dual + "li" + "e" * ema


def trace_kernels(variant: str, dtype: torch.dtype) -> tuple | None:
    """``(forward, backward)`` of a trace variant for float32/float64, built on first use; ``None`` when the native
    kernels are unavailable."""
    dual, ema = variant.startswith("d"), variant.endswith("e")
    defines = [f"-DTT_TNAME={variant}", f"-DTT_DUAL={int(dual)}", f"-DTT_EMA={int(ema)}"]
    return _native.kernel_pair("trace", variant, dtype, defines, [_CI64] * 6 + [_CPTR] * 2, [_CI64] * 6 + [_CPTR] * 3)


@torch.compiler.assume_constant_result  # compiled code asks while tracing: dynamo cannot trace the build's lock
def has_trace_variant(variant: str, dtype: torch.dtype) -> bool:
    """Whether the kernels of a trace ``variant`` for ``dtype`` are here (:func:`trace_kernels`, built on first use)."""
    return trace_kernels(variant, dtype) is not None


def flat_params(a: Tensor, na: Tensor | None, step_shape: tuple[int, ...], ema: bool):
    """The layout and the flat parameter pack of :data:`TRACE_PARAMS` (``1 - a`` as the torch path computes it)."""
    given = [a] if na is None else [a, na]
    *layout, index = _native.param_layout(step_shape, given)
    fa = _native.flat_param(a, step_shape, index)
    flat = {"a": fa}
    if ema:
        flat["one_m_a"] = 1 - fa
    if na is not None:
        fna = _native.flat_param(na, step_shape, index)
        flat["na"] = fna
        if ema:
            flat["one_m_na"] = 1 - fna
    return tuple(layout), index, flat


def trace_forward(variant: str, T: int, layout: tuple[int, int, int], flat: dict[str, Tensor], io: dict) -> None:
    """Run a trace variant's forward kernel over ``T`` steps: ``io`` by :data:`TRACE_FWD_IO` name (contiguous CPU
    tensors of one dtype; ``H``/``NH`` absent: nothing saved), ``flat`` by :data:`TRACE_PARAMS` name."""
    fwd = trace_kernels(variant, io["x"].dtype)[0]
    pack, ptrs = _native._pack_of(TRACE_PARAMS, flat), _native._pack_of(TRACE_FWD_IO, io)
    args = (layout[1], layout[2], io["hT"].numel(), ctypes.addressof(pack), ctypes.addressof(ptrs))
    _native._run([lambda o0=o0, o1=o1: fwd(T, o0, o1, *args) for o0, o1 in _native._ranges(T, layout)])


def trace_backward(
    variant: str, T: int, layout: tuple[int, int, int], flat: dict[str, Tensor], io: dict, accs: dict[str, Tensor]
) -> None:
    """Run a trace variant's backward kernel: ``io`` by :data:`TRACE_BWD_IO` name; ``accs``: the decays' P-long
    gradient accumulators (``a``, ``na``; only the wanted ones), added to (other threads sum into their own
    copies, added in at the end)."""
    bwd = trace_kernels(variant, io["H"].dtype)[1]
    pack, ptrs = _native._pack_of(TRACE_PARAMS, flat), _native._pack_of(TRACE_BWD_IO, io)
    ranges = _native._ranges(T, layout)
    own = [accs] + [{k: torch.zeros_like(v) for k, v in accs.items()} for _ in ranges[1:]]
    acc_packs = [_native._pack_of(("a", "na"), o) for o in own]
    args = (layout[1], layout[2], io["gh0"].numel(), ctypes.addressof(pack), ctypes.addressof(ptrs))
    _native._run([
        lambda o0=o0, o1=o1, ap=ap: bwd(T, o0, o1, *args, ctypes.addressof(ap))
        for (o0, o1), ap in zip(ranges, acc_packs, strict=True)
    ])  # fmt: skip
    for extra in own[1:]:
        for k, v in extra.items():
            accs[k].add_(v)
