"""Mamba's selective scan (S6) over a whole sequence.

``h_t = exp(delta_t A) h_{t-1} + (delta_t u_t) B_t``, ``y_t = sum_n C_t h_t + D u_t`` with per-channel ``A``
``[D, N]`` and input-dependent ``delta_t`` ``[batch, D]``, ``B_t``, ``C_t`` ``[batch, N]``.

``selective_scan_ref`` is the plain reference (autograd through a loop of :func:`~tracetorch.functional.ssm.
selective_step`). ``selective_scan`` computes the same numbers as one autograd node with a hand-written backward:

* the forward walks the sequence in chunks of ``chunk`` steps. Per chunk, ``exp(delta A)`` and ``delta u B`` are
  computed for all its steps at once, the recurrence runs one fused ``addcmul`` per step in place, and the
  outputs are one batched matmul against ``C``. Only the state at each chunk start is kept for the backward:
  ``[T / chunk, batch, D, N]`` instead of the ``[T, batch, D, N]`` states autograd would save (several times over).
* the backward walks the chunks in reverse: it recomputes the chunk's states from the saved start, runs the
  reverse-time adjoint ``lam_t = C_t dy_t + exp(delta_{t+1} A) lam_{t+1}`` in place, and turns it into the
  gradients of every input with a handful of batched ops per chunk (``A``'s and ``D``'s summed once).

Chunk buffers are ``[chunk, batch, D, N]`` and are reused across chunks, so they stay in cache at moderate sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional.ssm import LOG2E, selective_step

__all__ = ["DEFAULT_CHUNK", "selective_scan", "selective_scan_ref"]

DEFAULT_CHUNK = 16


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, h0: Tensor | None):
    if u.ndim != 3 or u.shape[0] == 0:
        raise ValueError(f"selective_scan: u must be [T, batch, D] with T > 0, got {tuple(u.shape)}")
    t, b, d = u.shape
    n = A.shape[-1]
    want = {"delta": (delta, (t, b, d)), "A": (A, (d, n)), "B": (B, (t, b, n)), "C": (C, (t, b, n))}
    if D is not None:
        want["D"] = (D, (d,))
    if h0 is not None:
        want["h0"] = (h0, (b, d, n))
    for name, (v, shape) in want.items():
        if tuple(v.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(v.shape)}")


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference selective scan: a step loop with autograd.

    Args:
        u: inputs ``[T, batch, D]``.
        delta: positive step sizes ``[T, batch, D]``.
        A: per-channel state matrix (diagonal) ``[D, N]``, negative.
        B, C: input-dependent input/output maps ``[T, batch, N]``, shared by the channels.
        D: skip ``[D]`` or ``None``.
        h0: initial state ``[batch, D, N]`` or ``None`` (zeros).

    Returns:
        ``(y [T, batch, D], h_T [batch, D, N])``.
    """
    _check(u, delta, A, B, C, D, h0)
    h = h0 if h0 is not None else u.new_zeros(u.shape[1], u.shape[2], A.shape[-1])
    ys = []
    for ut, dt, bt, ct in zip(u.unbind(0), delta.unbind(0), B.unbind(0), C.unbind(0), strict=True):
        y, h = selective_step(ut, dt, A, bt, ct, D, h)
        ys.append(y)
    return torch.stack(ys), h


class _SelectiveScan(torch.autograd.Function):
    # Inside, states are laid out [batch, N, D] (channels innermost): the reductions over N then run over an
    # outer axis and the products with B and C are [1, N] x [N, D] matmuls, both much faster on CPU than the
    # short inner reductions of a [batch, D, N] layout. exp(x) is computed as exp2(x log2 e): same value to
    # rounding, and several times faster than exp on the CPUs measured here.

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0, chunk):
        t_len, b, d = u.shape
        n = A.shape[-1]
        c_len = min(chunk, t_len)
        a2 = (A * LOG2E).t().contiguous()  # [N, D]
        y = u.new_empty(t_len, b, d)
        n_chunks = (t_len + chunk - 1) // chunk
        starts = u.new_empty(n_chunks, b, n, d)  # the state before each chunk, kept for the backward
        dA_buf = u.new_empty(c_len, b, n, d)
        h_buf = u.new_empty(c_len, b, n, d)
        du = delta * u
        h = h0.transpose(-1, -2)
        for c in range(n_chunks):
            t0 = c * chunk
            t1 = min(t0 + chunk, t_len)
            k = t1 - t0
            h = starts[c].copy_(h)  # h may live in h_buf, about to be overwritten
            dA = torch.mul(delta[t0:t1].unsqueeze(-2), a2, out=dA_buf[:k]).exp2_()
            hs = torch.mul(B[t0:t1].unsqueeze(-1), du[t0:t1].unsqueeze(-2), out=h_buf[:k])
            for i in range(k):  # h_t = dA_t h_{t-1} + dBu_t, in place over dBu_t
                torch.addcmul(hs[i], dA[i], h, out=hs[i])
                h = hs[i]
            torch.bmm(C[t0:t1].reshape(k * b, 1, n), hs.view(k * b, n, d), out=y[t0:t1].view(k * b, 1, d))
        if D is not None:
            y.addcmul_(u, D)
        h_last = h.clone().transpose(-1, -2)  # [batch, D, N] view of [batch, N, D] memory, as selective_step
        ctx.save_for_backward(u, delta, A, B, C, D, starts)
        ctx.chunk = chunk
        return y, h_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, D, starts = ctx.saved_tensors
        chunk = ctx.chunk
        t_len, b, d = u.shape
        n = A.shape[-1]
        c_len = min(chunk, t_len)
        a_t = A.t().contiguous()
        a2 = a_t * LOG2E
        gy = gy.contiguous()
        du = delta * u
        g_lam_b = torch.empty_like(u)  # sum_n lam B, per step
        g_delta = torch.empty_like(delta)
        g_B = torch.empty_like(B)
        g_C = torch.empty_like(C)
        g_A = torch.zeros_like(a_t)
        dA_buf = u.new_empty(c_len, b, n, d)
        hp_buf = u.new_empty(c_len + 1, b, n, d)  # [h_{t0-1}, h_t0, ..., h_{t1-1}]
        lam_buf = u.new_empty(c_len, b, n, d)
        carry = gh_last.transpose(-1, -2)  # dL/dh at the end of the current chunk, from later steps
        for c in range(len(starts) - 1, -1, -1):
            t0 = c * chunk
            t1 = min(t0 + chunk, t_len)
            k = t1 - t0
            kb = k * b
            # recompute the chunk's states
            dA = torch.mul(delta[t0:t1].unsqueeze(-2), a2, out=dA_buf[:k]).exp2_()
            hp = hp_buf[: k + 1]
            hp[0].copy_(starts[c])
            hs = torch.mul(B[t0:t1].unsqueeze(-1), du[t0:t1].unsqueeze(-2), out=hp[1:])
            for i in range(k):
                torch.addcmul(hs[i], dA[i], hp[i], out=hs[i])
            torch.bmm(hs.view(kb, n, d), gy[t0:t1].view(kb, d, 1), out=g_C[t0:t1].view(kb, n, 1))
            # adjoint: lam_t = C_t dy_t + dA_{t+1} lam_{t+1}, with the carry from the next chunk
            lam = torch.mul(C[t0:t1].unsqueeze(-1), gy[t0:t1].unsqueeze(-2), out=lam_buf[:k])
            lam[k - 1].add_(carry)
            for i in range(k - 2, -1, -1):
                torch.addcmul(lam[i], dA[i + 1], lam[i + 1], out=lam[i])
            carry = dA[0] * lam[0]
            torch.bmm(B[t0:t1].reshape(kb, 1, n), lam.view(kb, n, d), out=g_lam_b[t0:t1].view(kb, 1, d))
            torch.bmm(lam.view(kb, n, d), du[t0:t1].reshape(kb, d, 1), out=g_B[t0:t1].view(kb, n, 1))
            # x = lam * h_{t-1} * dA = dL/d(delta A), in place over dA (no longer needed)
            x = dA.mul_(lam).mul_(hp[:k])
            g_A += torch.mul(x, delta[t0:t1].unsqueeze(-2), out=lam).sum((0, 1))
            torch.sum(torch.mul(x, a_t, out=hp[1:]), -2, out=g_delta[t0:t1])
        g_delta.addcmul_(u, g_lam_b)
        g_u = g_lam_b.mul_(delta)
        g_D = None
        if D is not None:
            g_u.addcmul_(gy, D)
            g_D = (gy * u).sum((0, 1))
        return g_u, g_delta, g_A.t(), g_B, g_C, g_D, carry.transpose(-1, -2), None


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Selective scan as one autograd node: same arguments and numbers as :func:`selective_scan_ref`.

    ``chunk`` steps share one set of scratch buffers; the backward recomputes states inside each chunk from the
    state saved at its start. Gradients flow to ``u``, ``delta``, ``A``, ``B``, ``C``, ``D`` and ``h0``.
    All tensors must share one dtype and device.
    """
    _check(u, delta, A, B, C, D, h0)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"selective_scan: chunk must be a positive int, got {chunk!r}")
    if h0 is None:
        h0 = u.new_zeros(u.shape[1], u.shape[2], A.shape[-1])
    args = [t.contiguous() for t in (u, delta, A, B, C)]
    return _SelectiveScan.apply(*args, None if D is None else D.contiguous(), h0.contiguous(), chunk)
