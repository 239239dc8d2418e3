"""The autograd glue of the trace op's flat kernels (:mod:`.native` C on the CPU, :mod:`.triton` on CUDA): both take
the same parameter packs (:data:`.native.TRACE_PARAMS`) and tensors by the same slot names
(:data:`.native.TRACE_FWD_IO`, :data:`.native.TRACE_BWD_IO`), so one forward and one backward serve both."""

from __future__ import annotations

import torch
from torch import Tensor

from ..fire import native as _fire_native
from ..fire.flat import from_flat
from ..workspace import give_back_when_dead, take
from . import native
from .native import flat_params, trace_variant

__all__ = ["TraceFlat", "backward_inputs", "trace_gradients", "trace_pass"]


def _empty_big(like: Tensor) -> Tensor:
    return _fire_native.empty_like_huge(like) if like.device.type == "cpu" else torch.empty_like(like)


def trace_pass(
    x: Tensor, a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool, save: bool, alloc=take,
    kernels=native,
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Tensor | None]]:  # fmt: skip
    """One forward pass of a flat kernel (``kernels``: :mod:`.native` or :mod:`.triton`): ``(y, h_T, nh_T, saved)``;
    ``saved`` holds what :func:`trace_gradients` reads (``x``, the traces ``H``/``NH`` allocated by ``alloc(like)``,
    the expanded initial traces), empty unless ``save``."""
    dual = na is not None
    x = x.contiguous()
    step_shape = tuple(x.shape[1:])
    layout, _, flat = flat_params(a, na, step_shape, ema)
    Y = _empty_big(x)
    H = alloc(x) if save and dual else None
    NH = alloc(x) if save and dual else None
    hT = x.new_empty(step_shape)
    nhT = x.new_empty(step_shape) if dual else None
    kept = backward_inputs(x, Y, H, NH, h0, nh0, ema)
    io = {"x": x, "h0": kept["h0"], "nh0": kept["nh0"], "Y": Y, "H": H, "NH": NH, "hT": hT, "nhT": nhT}
    kernels.trace_forward(trace_variant(dual, ema), x.shape[0], layout, flat, io)
    return Y, hT, nhT, kept if save else {}


def backward_inputs(
    x: Tensor, Y: Tensor, H: Tensor | None, NH: Tensor | None, h0: Tensor, nh0: Tensor | None, ema: bool
) -> dict[str, Tensor | None]:
    """What :func:`trace_gradients` reads of a pass: ``x`` (under EMA or D), the traces (without D the output is the
    trace itself) and the initial traces expanded to a step, contiguous."""
    dual = nh0 is not None
    step = tuple(x.shape[1:])
    return {
        "x": x if (ema or dual) else None,
        "H": H if dual else Y,
        "NH": NH,
        "h0": h0.expand(step).contiguous(),
        "nh0": nh0.expand(step).contiguous() if dual else None,
    }


def trace_gradients(
    saved: dict[str, Tensor | None], a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool,
    want: dict[str, bool], gY: Tensor | None, ghT: Tensor | None, gnhT: Tensor | None, kernels=native,
) -> dict[str, Tensor]:  # fmt: skip
    """The backward of :func:`trace_pass`: the gradients ``want`` asks for by name (``x``, ``a``, ``h0``, ``na``,
    ``nh0``), shaped like their inputs; ``gY``, ``ghT``, ``gnhT``: the gradients of the outputs (``None``: zero)."""
    H = saved["H"]
    dual = na is not None
    step_shape = tuple(H.shape[1:])
    layout, index, flat = flat_params(a, na, step_shape, ema)
    P = layout[1]
    accs = {k: H.new_zeros(P) for k in ("a", "na") if want.get(k) and (k == "a" or dual)}
    gX = _empty_big(H) if want.get("x") else None
    gh0 = H.new_empty(step_shape)
    gnh0 = H.new_empty(step_shape) if dual else None
    io = dict(saved) | {"gX": gX, "gh0": gh0, "gnh0": gnh0}
    io["gY"] = torch.zeros_like(H) if gY is None else gY.contiguous()
    io["ghT"] = None if ghT is None else ghT.contiguous()
    io["gnhT"] = None if gnhT is None else gnhT.contiguous()
    kernels.trace_backward(trace_variant(dual, ema), H.shape[0], layout, flat, io, accs)
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


class TraceFlat(torch.autograd.Function):
    """``(y, h_T, nh_T)`` of :func:`tracetorch.ops.trace.trace_sequence` through a flat kernel (``nh_T`` and the
    ``n``-inputs only under D). Inputs: ``x [T, ...]``, decay ``a`` and initial trace ``h0`` (``na``, ``nh0``: the
    negative trace's, or ``None``) of one dtype and device, ``ema``, the kernels (:mod:`.native`, :mod:`.triton`)."""

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool, kernels):
        save = any(ctx.needs_input_grad[:5])  # (autograd is off in here)
        Y, hT, nhT, saved = trace_pass(x, a, h0, na, nh0, ema, save, kernels=kernels)
        ctx.ema, ctx.fields, ctx.kernels = ema, tuple(saved), kernels
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
        g = trace_gradients(saved, a, h0, na, nh0, ctx.ema, want, gY, ghT, gnhT, kernels=ctx.kernels)
        return g.get("x"), g.get("a"), g.get("h0"), g.get("na"), g.get("nh0"), None, None
