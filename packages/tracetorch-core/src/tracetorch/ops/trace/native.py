"""The native CPU kernels of the trace op (``native_trace.inc``, built by the fire op's machinery,
:func:`tracetorch.ops.fire.native.kernel_pair`) and their autograd node.

One pass over memory per direction, time innermost, as the firing kernels: the sign split, the EMA scaling, the
recurrence and (under D) the sum of the two traces happen per element, so no ``[T, ...]`` intermediate is made
(the torch path makes five to ten, and on this machine the page faults of fresh large buffers cost more than the
arithmetic). Outputs and final states are bit-identical to the torch path (the same operations: ``(1 - a) * x``,
then ``addcmul``); gradients agree to rounding (parameter gradients are summed in another order).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..fire import native as _native
from ..fire.flat import from_flat
from ..workspace import give_back_when_dead, take

__all__ = [
    "TRACE_BWD_IO",
    "TRACE_FWD_IO",
    "TRACE_PARAMS",
    "TraceNative",
    "has_trace_variant",
    "trace_gradients",
    "trace_kernels",
    "trace_pass",
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


def _params(a: Tensor, na: Tensor | None, step_shape: tuple[int, ...], ema: bool):
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


def trace_pass(
    x: Tensor, a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool, save: bool, alloc=take
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Tensor | None]]:
    """One forward pass of the native kernel: ``(y, h_T, nh_T, saved)``; ``saved`` holds what
    :func:`trace_gradients` reads (``x``, the traces ``H``/``NH`` allocated by ``alloc(like)``, the expanded initial
    traces), empty unless ``save``."""
    dual = na is not None
    fwd = trace_kernels(trace_variant(dual, ema), x.dtype)[0]
    x = x.contiguous()
    step_shape = tuple(x.shape[1:])
    layout, _, flat = _params(a, na, step_shape, ema)
    Y = _native.empty_like_huge(x)
    H = alloc(x) if save and dual else None
    NH = alloc(x) if save and dual else None
    hT = torch.empty(step_shape, dtype=x.dtype)
    nhT = torch.empty(step_shape, dtype=x.dtype) if dual else None
    h0c = h0.expand(step_shape).contiguous()
    nh0c = nh0.expand(step_shape).contiguous() if dual else None
    io = {"x": x, "h0": h0c, "nh0": nh0c, "Y": Y, "H": H, "NH": NH, "hT": hT, "nhT": nhT}
    pack, ptrs = _native._pack_of(TRACE_PARAMS, flat), _native._pack_of(TRACE_FWD_IO, io)
    args = (layout[1], layout[2], hT.numel(), pack.data_ptr(), ptrs.data_ptr())
    T = x.shape[0]
    _native._run([lambda o0=o0, o1=o1: fwd(T, o0, o1, *args) for o0, o1 in _native._ranges(T, layout)])
    saved = {}
    if save:  # without D the output is the trace itself
        saved = {"x": x if (ema or dual) else None, "H": H if dual else Y, "NH": NH, "h0": h0c, "nh0": nh0c}
    return Y, hT, nhT, saved


def trace_gradients(
    saved: dict[str, Tensor | None], a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool,
    want: dict[str, bool], gY: Tensor | None, ghT: Tensor | None, gnhT: Tensor | None,
) -> dict[str, Tensor]:  # fmt: skip
    """The backward of :func:`trace_pass`: the gradients ``want`` asks for by name (``x``, ``a``, ``h0``, ``na``,
    ``nh0``), shaped like their inputs; ``gY``, ``ghT``, ``gnhT``: the gradients of the outputs (``None``: zero)."""
    H = saved["H"]
    dual = na is not None
    bwd = trace_kernels(trace_variant(dual, ema), H.dtype)[1]
    step_shape = tuple(H.shape[1:])
    layout, index, flat = _params(a, na, step_shape, ema)
    P = layout[1]
    accs = {k: torch.zeros(P, dtype=H.dtype) for k in ("a", "na") if want.get(k) and (k == "a" or dual)}
    gX = _native.empty_like_huge(H) if want.get("x") else None
    gh0 = torch.empty(step_shape, dtype=H.dtype)
    gnh0 = torch.empty(step_shape, dtype=H.dtype) if dual else None
    io = dict(saved) | {"gX": gX, "gh0": gh0, "gnh0": gnh0}
    io["gY"] = torch.zeros_like(H) if gY is None else gY.contiguous()
    io["ghT"] = None if ghT is None else ghT.contiguous()
    io["gnhT"] = None if gnhT is None else gnhT.contiguous()
    T = H.shape[0]
    pack, ptrs = _native._pack_of(TRACE_PARAMS, flat), _native._pack_of(TRACE_BWD_IO, io)
    ranges = _native._ranges(T, layout)
    own = [accs] + [{k: torch.zeros_like(v) for k, v in accs.items()} for _ in ranges[1:]]
    acc_packs = [_native._pack_of(("a", "na"), o) for o in own]
    args = (layout[1], layout[2], gh0.numel(), pack.data_ptr(), ptrs.data_ptr())
    _native._run([
        lambda o0=o0, o1=o1, ap=ap: bwd(T, o0, o1, *args, ap.data_ptr())
        for (o0, o1), ap in zip(ranges, acc_packs, strict=True)
    ])  # fmt: skip
    for extra in own[1:]:
        for k, v in extra.items():
            accs[k].add_(v)
    grads: dict[str, Tensor] = {}
    if gX is not None:
        grads["x"] = gX
    for k, like in (("a", a), ("na", na)):
        if k in accs:
            grads[k] = from_flat(accs[k], index, step_shape, like)
    if want.get("h0"):
        grads["h0"] = gh0.sum_to_size(h0.shape)
    if dual and want.get("nh0"):
        grads["nh0"] = gnh0.sum_to_size(nh0.shape)
    return grads


class TraceNative(torch.autograd.Function):
    """``(y, h_T, nh_T)`` of :func:`tracetorch.ops.trace.trace_sequence` through the native kernels (``nh_T`` and the
    ``n``-inputs only under D). Inputs: ``x [T, ...]``, decay ``a`` and initial trace ``h0`` (``na``, ``nh0``: the
    negative trace's, or ``None``), CPU float32/float64 of one dtype, ``ema``."""

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool):
        save = any(ctx.needs_input_grad[:5])  # (autograd is off in here)
        Y, hT, nhT, saved = trace_pass(x, a, h0, na, nh0, ema, save)
        ctx.ema, ctx.fields = ema, tuple(saved)
        ctx.save_for_backward(*saved.values(), a, na, h0, nh0)
        if na is not None and save:
            give_back_when_dead(ctx, (saved["H"], saved["NH"]))
        return (Y, hT) if na is None else (Y, hT, nhT)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gY, ghT, gnhT=None):
        *kept, a, na, h0, nh0 = ctx.saved_tensors
        saved = dict(zip(ctx.fields, kept, strict=True))
        want = dict(zip(("x", "a", "h0", "na", "nh0"), ctx.needs_input_grad[:5], strict=True))
        g = trace_gradients(saved, a, h0, na, nh0, ctx.ema, want, gY, ghT, gnhT)
        return g.get("x"), g.get("a"), g.get("h0"), g.get("na"), g.get("nh0"), None
