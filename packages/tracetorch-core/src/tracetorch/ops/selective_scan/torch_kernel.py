"""The torch kernel of the selective scan: one autograd node over chunks of steps, a hand-written backward
(see :mod:`tracetorch.ops.selective_scan`)."""

from __future__ import annotations

import torch

from ...functional.ssm import LOG2E

__all__ = ["SelectiveScan"]

# Batch rows are processed in blocks so that one [chunk, rows, N, D] scratch buffer is at most about this many
# bytes: small enough to stay in the CPU caches while the per-step ops stream over it, big enough that the ~2 us
# per-op dispatch cost stays small against the work (measured on CPU: 2 MiB beats both 0.5 MiB and the whole batch).
BLOCK_BYTES = 2 << 20


def _block_rows(b: int, n: int, d: int, c_len: int, itemsize: int) -> int:
    """Rows of the batch per block: scratch buffers within ``BLOCK_BYTES``, blocks of near-equal size."""
    rows = max(1, min(b, BLOCK_BYTES // (c_len * n * d * itemsize)))
    nb = (b + rows - 1) // rows
    return (b + nb - 1) // nb


class SelectiveScan(torch.autograd.Function):
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
