"""The native trace kernels as ``torch.library`` custom ops (``tracetorch::trace_native`` and its backward), so that
compiled graphs keep them and give the eager numbers bit for bit, as :mod:`tracetorch.ops.fire.custom_ops` does for
the firing kernels. Absent optional tensors are passed as ``None`` and returned as empty tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from ..fire.custom_ops import _or_none
from .flat import backward_inputs, trace_gradients, trace_pass

__all__ = ["trace_native_compiled"]

_INPUTS = ("x", "a", "h0", "na", "nh0")


@torch.library.custom_op("tracetorch::trace_native", mutates_args=())
def trace_native(
    x: Tensor, a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool, save: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y, h_T, nh_T, H, NH)``: the outputs, the final traces and (``save``, under D) the traces the backward
    reads; empty where absent."""
    Y, hT, nhT, saved = trace_pass(x, a, h0, na, nh0, ema, save, alloc=torch.empty_like)
    rest = [nhT, saved.get("H") if na is not None else None, saved.get("NH")]
    return (Y, hT, *(x.new_empty(0) if t is None else t for t in rest))  # type: ignore[return-value]


@trace_native.register_fake
def _(x, a, h0, na, nh0, ema, save):
    dual = na is not None
    step = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
    kept = [torch.empty_like(x) if dual and save else x.new_empty(0) for _ in range(2)]
    return (torch.empty_like(x), step, torch.empty_like(step) if dual else x.new_empty(0), *kept)


@torch.library.custom_op("tracetorch::trace_native_backward", mutates_args=())
def trace_native_backward(
    gY: Tensor | None, ghT: Tensor | None, gnhT: Tensor | None, Y: Tensor, x: Tensor, H: Tensor | None,
    NH: Tensor | None, a: Tensor, h0: Tensor, na: Tensor | None, nh0: Tensor | None, ema: bool, wanted: list[bool],
) -> list[Tensor]:  # fmt: skip
    """The gradients of :func:`trace_native`'s tensor inputs (``x, a, h0, na, nh0``) flagged in ``wanted``."""
    saved = backward_inputs(x, Y, H, NH, h0, nh0, ema)
    want = dict(zip(_INPUTS, wanted, strict=True))
    g = trace_gradients(saved, a, h0, na, nh0, ema, want, gY, ghT, gnhT)
    return [g[k] for k, on in want.items() if on]


@trace_native_backward.register_fake
def _(gY, ghT, gnhT, Y, x, H, NH, a, h0, na, nh0, ema, wanted):
    return [torch.empty_like(t) for t, on in zip((x, a, h0, na, nh0), wanted, strict=True) if on]


def _setup_context(ctx, inputs, output) -> None:
    x, a, h0, na, nh0, ema, _save = inputs
    ctx.ema = ema
    ctx.present = [True, True, True, na is not None, nh0 is not None]
    ctx.save_for_backward(output[0], x, _or_none(output[3]), _or_none(output[4]), a, h0, na, nh0)


def _backward(ctx, gY, ghT, gnhT, _gH, _gNH):
    Y, x, H, NH, a, h0, na, nh0 = ctx.saved_tensors
    wanted = [bool(n) and there for n, there in zip(ctx.needs_input_grad, ctx.present, strict=False)]
    grads = trace_native_backward(gY, ghT, _or_none(gnhT), Y, x, H, NH, a, h0, na, nh0, ctx.ema, wanted)
    by_name = dict(zip((k for k, on in zip(_INPUTS, wanted, strict=True) if on), grads, strict=True))
    return (*(by_name.get(k) for k in _INPUTS), None, None)


trace_native.register_autograd(_backward, setup_context=_setup_context)


def trace_native_compiled(
    x: Tensor, a: Tensor, h0: Tensor, ema: bool, na: Tensor | None, nh0: Tensor | None
) -> tuple[Tensor, ...]:
    """:func:`tracetorch.ops.trace.trace_sequence` through the custom op (for compiled graphs)."""
    y, hT, nhT, _, _ = trace_native(x, a, h0, na, nh0, ema, torch.is_grad_enabled())
    return (y, hT) if na is None else (y, hT, nhT)
