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

Both passes walk the batch in blocks of rows (:data:`BLOCK_BYTES`): chunk buffers are ``[chunk, rows, N, D]``,
reused across chunks and blocks, so they stay in cache; the numbers do not depend on the blocking.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..functional.ssm import LOG2E, selective_step
from . import triton_scan

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


# Batch rows are processed in blocks so that one [chunk, rows, N, D] scratch buffer is at most about this many
# bytes: small enough to stay in the CPU caches while the per-step ops stream over it, big enough that the ~2 us
# per-op dispatch cost stays small against the work (measured on CPU: 2 MiB beats both 0.5 MiB and the whole batch).
BLOCK_BYTES = 2 << 20


def _block_rows(b: int, n: int, d: int, c_len: int, itemsize: int) -> int:
    """Rows of the batch per block: scratch buffers within ``BLOCK_BYTES``, blocks of near-equal size."""
    rows = max(1, min(b, BLOCK_BYTES // (c_len * n * d * itemsize)))
    nb = (b + rows - 1) // rows
    return (b + nb - 1) // nb


class _SelectiveScan(torch.autograd.Function):
    # Inside, states are laid out [batch, N, D] (channels innermost): the reductions over N then run over an
    # outer axis and the products with B and C are [1, N] x [N, D] matmuls, both much faster on CPU than the
    # short inner reductions of a [batch, D, N] layout. exp(x) is computed as exp2(x log2 e): same value to
    # rounding, and several times faster than exp on the CPUs measured here. Contractions over D are written
    # [1, D] x [D, N] (a transposed view of the [N, D] states): ~9x faster than the [N, D] x [D, 1] form.
    # The per-step loops run over views unbound once (indexing per step costs more than a small step).
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0, chunk):
        t_len, b, d = u.shape
        n = A.shape[-1]
        c_len = min(chunk, t_len)
        n_chunks = (t_len + chunk - 1) // chunk
        rows = _block_rows(b, n, d, c_len, u.element_size())
        a2 = (A * LOG2E).t().contiguous()  # [N, D]
        y = u.new_empty(t_len, b, d)
        starts = u.new_empty(n_chunks, b, n, d)
        h_last = u.new_empty(b, n, d)
        dA_buf = u.new_empty(c_len * rows * n * d)
        h_buf = u.new_empty(c_len * rows * n * d)
        for b0 in range(0, b, rows):
            sl = slice(b0, min(b0 + rows, b))
            r = sl.stop - b0
            whole = r == b
            delta_j, B_j, C_j = delta[:, sl], B[:, sl], C[:, sl]
            du = torch.mul(delta_j, u[:, sl])
            y_j = y if whole else u.new_empty(t_len, r, d)
            dA_all = dA_buf[: c_len * r * n * d].view(c_len, r, n, d)
            h_all = h_buf[: c_len * r * n * d].view(c_len, r, n, d)
            dA_l, h_l = dA_all.unbind(0), h_all.unbind(0)
            h = h0[sl].transpose(-1, -2)
            for c in range(n_chunks):
                t0 = c * chunk
                t1 = min(t0 + chunk, t_len)
                k = t1 - t0
                h = starts[c, sl].copy_(h)
                torch.mul(delta_j[t0:t1].unsqueeze(-2), a2, out=dA_all[:k]).exp2_()
                hs = torch.mul(B_j[t0:t1].unsqueeze(-1), du[t0:t1].unsqueeze(-2), out=h_all[:k])
                for i in range(k):
                    h = h_l[i].addcmul_(dA_l[i], h)
                torch.bmm(C_j[t0:t1].reshape(k * r, 1, n), hs.view(k * r, n, d), out=y_j[t0:t1].view(k * r, 1, d))
            h_last[sl].copy_(h)
            if not whole:
                y[:, sl].copy_(y_j)
        if D is not None:
            y.addcmul_(u, D)
        ctx.save_for_backward(u, delta, A, B, C, D, starts)
        ctx.chunk = chunk
        return y, h_last.transpose(-1, -2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, D, starts = ctx.saved_tensors
        chunk = ctx.chunk
        t_len, b, d = u.shape
        n = A.shape[-1]
        c_len = min(chunk, t_len)
        n_chunks = len(starts)
        rows = _block_rows(b, n, d, c_len, u.element_size())
        a_t = A.t().contiguous()
        a2 = a_t * LOG2E
        gy = gy.contiguous()
        g_u = torch.empty_like(u)
        g_delta = torch.empty_like(delta)
        g_B = u.new_empty(B.shape)
        g_C = u.new_empty(C.shape)
        g_h0 = u.new_empty(b, n, d)
        size = c_len * rows * n * d
        dA_buf = u.new_empty(size)
        hp_buf = u.new_empty(size + rows * n * d)
        lam_buf = u.new_empty(size)
        acc_buf = u.new_zeros(size)
        carry_buf = u.new_empty(rows * n * d)
        for b0 in range(0, b, rows):
            sl = slice(b0, min(b0 + rows, b))
            r = sl.stop - b0
            whole = r == b
            u_j, delta_j, B_j, C_j = u[:, sl], delta[:, sl], B[:, sl], C[:, sl]
            gy_j = gy if whole else gy[:, sl].contiguous()
            du = torch.mul(delta_j, u_j)
            g_lb = g_u if whole else torch.empty_like(du)  # sum_n lam B per step, then g_u in place
            g_delta_j = g_delta if whole else torch.empty_like(du)
            g_B_j = g_B if whole else u.new_empty(t_len, r, n)
            g_C_j = g_C if whole else u.new_empty(t_len, r, n)
            dA_all = dA_buf[: c_len * r * n * d].view(c_len, r, n, d)
            hp_all = hp_buf[: (c_len + 1) * r * n * d].view(c_len + 1, r, n, d)
            lam_all = lam_buf[: c_len * r * n * d].view(c_len, r, n, d)
            acc = acc_buf[: c_len * r * n * d].view(c_len, r, n, d)
            carry_j = carry_buf[: r * n * d].view(r, n, d)
            dA_l, hp_l, lam_l = dA_all.unbind(0), hp_all.unbind(0), lam_all.unbind(0)
            carry = gh_last[sl].transpose(-1, -2)
            for c in range(n_chunks - 1, -1, -1):
                t0 = c * chunk
                t1 = min(t0 + chunk, t_len)
                k = t1 - t0
                kb = k * r
                dA = torch.mul(delta_j[t0:t1].unsqueeze(-2), a2, out=dA_all[:k]).exp2_()
                hp = hp_all[: k + 1]
                hp[0].copy_(starts[c, sl])
                hs = torch.mul(B_j[t0:t1].unsqueeze(-1), du[t0:t1].unsqueeze(-2), out=hp[1:])
                for i in range(k):
                    hp_l[i + 1].addcmul_(dA_l[i], hp_l[i])
                hs_t = hs.view(kb, n, d).transpose(1, 2)
                torch.bmm(gy_j[t0:t1].view(kb, 1, d), hs_t, out=g_C_j[t0:t1].view(kb, 1, n))
                lam = torch.mul(C_j[t0:t1].unsqueeze(-1), gy_j[t0:t1].unsqueeze(-2), out=lam_all[:k])
                lam[k - 1].add_(carry)
                for i in range(k - 2, -1, -1):
                    lam_l[i].addcmul_(dA_l[i + 1], lam_l[i + 1])
                carry = torch.mul(dA[0], lam[0], out=carry_j)
                lam_v = lam.view(kb, n, d)
                torch.bmm(B_j[t0:t1].reshape(kb, 1, n), lam_v, out=g_lb[t0:t1].view(kb, 1, d))
                torch.bmm(du[t0:t1].view(kb, 1, d), lam_v.transpose(1, 2), out=g_B_j[t0:t1].view(kb, 1, n))
                x = dA.mul_(lam).mul_(hp[:k])  # dL/d(delta A)
                acc[:k].addcmul_(x, delta_j[t0:t1].unsqueeze(-2))
                torch.sum(x.mul_(a_t), -2, out=g_delta_j[t0:t1])
            g_h0[sl].copy_(carry)
            g_delta_j.addcmul_(u_j, g_lb)
            g_u_j = g_lb.mul_(delta_j)
            if D is not None:
                g_u_j.addcmul_(gy_j, D)
            if not whole:
                g_u[:, sl].copy_(g_u_j)
                g_delta[:, sl].copy_(g_delta_j)
                g_B[:, sl].copy_(g_B_j)
                g_C[:, sl].copy_(g_C_j)
        g_A = acc_buf.view(c_len * rows, n, d).sum(0).t()
        g_D = None if D is None else (gy * u).sum((0, 1))
        return g_u, g_delta, g_A, g_B, g_C, g_D, g_h0.transpose(-1, -2), None


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
    if torch.is_autocast_enabled(u.device.type):  # the scan runs in float32 (or float64), never in half
        dt = torch.promote_types(torch.float32, A.dtype)
        u, delta, A, B, C, D, h0 = (None if t is None else t.to(dt) for t in (u, delta, A, B, C, D, h0))
        with torch.autocast(u.device.type, enabled=False):
            return selective_scan(u, delta, A, B, C, D, h0, chunk=chunk)
    _check(u, delta, A, B, C, D, h0)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"selective_scan: chunk must be a positive int, got {chunk!r}")
    if h0 is None:
        h0 = u.new_zeros(u.shape[1], u.shape[2], A.shape[-1])
    if triton_scan.usable(u):  # CUDA: the Triton kernels (torch's per-step kernels are launch-bound there)
        try:
            return triton_scan.SelectiveScanTriton.apply(u, delta, A, B, C, D, h0, chunk)
        except Exception as exc:  # a kernel that does not compile or launch here: say so once, then torch runs
            triton_scan.disable(f"{type(exc).__name__}: {exc}")
            warnings.warn(f"tracetorch: Triton selective scan disabled ({exc}); using the torch implementation",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
    args = [t.contiguous() for t in (u, delta, A)] + [B, C]  # B, C: any strides (often split views)
    return _SelectiveScan.apply(*args, None if D is None else D.contiguous(), h0.contiguous(), chunk)
