"""The selective scan on CUDA through Triton (:mod:`.triton_kernels`): the same numbers as
:func:`tracetorch.ops.selective_scan.selective_scan_ref` (to rounding), one launch per direction instead of a
few small kernels per step. Used by :func:`~tracetorch.ops.selective_scan.selective_scan` for CUDA float32/64
tensors where Triton is installed (``TRACETORCH_BACKEND=torch``: never); :func:`triton_scan_status` says why not."""

from __future__ import annotations

import torch

from ...functional.ssm import LOG2E
from .._triton import LazyKernels, cdiv

__all__ = ["triton_scan_status", "usable"]

BD = 32  # channels per program
_K = LazyKernels("selective_scan.triton_kernels")


triton_scan_status = _K.status_line  # "available" or why not
usable = _K.usable
disable = _K.disable


def _np(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


class SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0, chunk):
        k = _K.load()
        t, b, d = u.shape
        n = A.shape[-1]
        u, delta, B, C, h0 = (v.contiguous() for v in (u, delta, B, C, h0))
        A = A.contiguous()
        a2 = (A * LOG2E).contiguous()
        K = max(1, min(chunk, t))
        n_chunks = cdiv(t, K)
        y = torch.empty_like(u)
        hT = u.new_empty(b, d, n)
        ckpt = u.new_empty(n_chunks, b, d, n)
        dummy = u.new_zeros(1)
        grid = (b, cdiv(d, BD))
        k.scan_fwd[grid](u, delta, a2, B, C, dummy if D is None else D.contiguous(), h0, y, hT, ckpt, t, b, d, n, K,
                         HAS_D=D is not None, BD=BD, NP=_np(n))  # fmt: skip
        ctx.save_for_backward(u, delta, A, a2, B, C, D, ckpt)
        ctx.K, ctx.n_chunks = K, n_chunks
        return y, hT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, ghT):
        k = _K.load()
        u, delta, A, a2, B, C, D, ckpt = ctx.saved_tensors
        t, b, d = u.shape
        n = A.shape[-1]
        nd = cdiv(d, BD)
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        scratch = u.new_empty(ctx.K, b, d, n)
        gu, gdelta = torch.empty_like(u), torch.empty_like(u)
        gB_part, gC_part = u.new_empty(nd, t, b, n), u.new_empty(nd, t, b, n)
        gA_part, gD_part, gh0 = u.new_empty(b, d, n), u.new_empty(b, d), u.new_empty(b, d, n)
        dummy = u.new_zeros(1)
        k.scan_bwd[(b, nd)](
            u, delta, a2, A, B, C, dummy if D is None else D.contiguous(), ckpt, scratch, gy,
            dummy if ghT is None else ghT.contiguous(), gu, gdelta, gB_part, gC_part, gA_part, gD_part, gh0,
            t, b, d, n, ctx.K, ctx.n_chunks, HAS_D=D is not None, HAS_GH=ghT is not None, BD=BD, NP=_np(n),
        )  # fmt: skip
        need = ctx.needs_input_grad
        return (
            gu if need[0] else None,
            gdelta if need[1] else None,
            gA_part.sum(0) if need[2] else None,
            gB_part.sum(0) if need[3] else None,
            gC_part.sum(0) if need[4] else None,
            gD_part.sum(0) if D is not None and need[5] else None,
            gh0 if need[6] else None,
            None,
        )
