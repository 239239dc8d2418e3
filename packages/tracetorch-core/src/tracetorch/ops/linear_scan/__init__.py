"""First-order linear recurrence ``h_t = a * h_{t-1} + x_t`` over a whole sequence.

``linear_scan_ref`` is the plain reference (autograd through a step loop). ``linear_scan`` computes the same
numbers as one autograd node: the forward loop writes into one preallocated output with the same op
(``addcmul``) as the reference, so outputs are bit-identical; the backward is the reverse-time recurrence
``g_t = dy_t + a * g_{t+1}``, with no per-step autograd graph to build or keep.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_scan", "linear_scan_ref"]


def linear_scan_ref(x: Tensor, a: Tensor, h0: Tensor) -> Tensor:
    """Reference. ``x`` ``[T, *S]``, decay ``a`` broadcastable to ``S``, initial state ``h0`` ``[*S]``.

    Returns every state ``h`` ``[T, *S]`` (the final state is ``h[-1]``).
    """
    hs = []
    h = h0
    for xt in x.unbind(0):
        h = torch.addcmul(xt, a, h)
        hs.append(h)
    return torch.stack(hs)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, a: Tensor, h0: Tensor) -> Tensor:
        dtype = torch.promote_types(torch.promote_types(x.dtype, a.dtype), h0.dtype)
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        h = h0
        for xt, ot in zip(x.unbind(0), out.unbind(0), strict=True):
            torch.addcmul(xt, a, h, out=ot)
            h = ot
        return out

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, a, h0 = inputs
        ctx.save_for_backward(a, h0, output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        a, h0, out = ctx.saved_tensors
        gx = torch.empty(grad_out.shape, dtype=out.dtype, device=out.device)
        gs, gxs = grad_out.unbind(0), gx.unbind(0)
        gxs[-1].copy_(gs[-1])
        for t in range(len(gs) - 2, -1, -1):
            torch.addcmul(gs[t], a, gxs[t + 1], out=gxs[t])
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[1]:
            h_prev = torch.cat([h0.expand(out.shape[1:]).unsqueeze(0), out[:-1]])
            grad_a = (gx * h_prev).sum_to_size(a.shape)
        if ctx.needs_input_grad[2]:
            grad_h0 = (a * gx[0]).sum_to_size(h0.shape)
        # autograd casts each gradient to its input's dtype.
        return gx if ctx.needs_input_grad[0] else None, grad_a, grad_h0


def linear_scan(x: Tensor, a: Tensor, h0: Tensor) -> Tensor:
    """``h_t = a * h_{t-1} + x_t`` for all t, as one autograd node (same numbers as :func:`linear_scan_ref`).

    ``x`` ``[T, *S]``; ``a`` broadcastable to ``S`` (e.g. per-neuron ``[N]`` or ``[N, 1, 1]``); ``h0`` ``[*S]``.
    Returns ``[T, *S]``. Gradients flow to ``x``, ``a`` and ``h0``.
    """
    if x.shape[0] == 0:
        raise ValueError("linear_scan: empty sequence (T = 0)")
    return _LinearScan.apply(x, a, h0)
