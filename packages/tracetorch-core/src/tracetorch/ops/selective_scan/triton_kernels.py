"""Triton kernels for the selective scan on CUDA (imported only where Triton is installed; see
:mod:`tracetorch.ops.selective_scan`).

One program owns one batch row and ``BD`` channels, with their ``[BD, N]`` states in registers, and loops over
time: ``h = exp2(delta a2) h + (delta u) B``, ``y = C . h + D u`` (``a2 = A log2(e)``). The forward keeps the
state at the start of every chunk of ``K`` steps. The backward walks the chunks in reverse: it recomputes the
chunk's states into a scratch buffer the program owns, then runs the adjoint ``g_h`` back through them.
Gradients that sum over channels (``B``, ``C``) or over the batch (``A``, ``D``) are written as partial sums per
channel block / batch row and reduced with ``torch.sum`` afterwards: no atomics, deterministic.
"""

# ruff: noqa: SIM108 (constexpr branches: only one is compiled)

import triton
import triton.language as tl


@triton.jit
def scan_fwd(u, delta, a2, B, C, Dp, h0, y, hT, ckpt, T, b, d, n, K,
             HAS_D: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):  # fmt: skip
    pb = tl.program_id(0)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    md = dd < d
    mn = nn < n
    m2 = md[:, None] & mn[None, :]
    tile = dd[:, None] * n + nn[None, :]  # [BD, NP] offsets within one [d, n] block
    A2 = tl.load(a2 + tile, mask=m2, other=0.0)
    row = tl.full([], 0, tl.int64) + pb
    h = tl.load(h0 + row * d * n + tile, mask=m2, other=0.0)
    if HAS_D:
        Dv = tl.load(Dp + dd, mask=md, other=0.0)
    for t in range(T):
        t64 = tl.full([], 0, tl.int64) + t
        if t % K == 0:
            tl.store(ckpt + ((t64 // K) * b + row) * d * n + tile, h, mask=m2)
        at_d = (t64 * b + row) * d + dd
        at_n = (t64 * b + row) * n + nn
        ut = tl.load(u + at_d, mask=md, other=0.0)
        dt = tl.load(delta + at_d, mask=md, other=0.0)
        Bt = tl.load(B + at_n, mask=mn, other=0.0)
        Ct = tl.load(C + at_n, mask=mn, other=0.0)
        dA = tl.exp2(dt[:, None] * A2)
        h = tl.fma(dA, h, (dt * ut)[:, None] * Bt[None, :])
        yt = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            yt = tl.fma(Dv, ut, yt)
        tl.store(y + at_d, yt, mask=md)
    tl.store(hT + row * d * n + tile, h, mask=m2)


@triton.jit
def scan_bwd(u, delta, a2, Ap, B, C, Dp, ckpt, scratch, gy, ghT, gu, gdelta, gB_part, gC_part, gA_part, gD_part, gh0,
             T, b, d, n, K, n_chunks,
             HAS_D: tl.constexpr, HAS_GH: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):  # fmt: skip
    pb = tl.program_id(0)
    pd = tl.program_id(1)
    dd = pd * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    md = dd < d
    mn = nn < n
    m2 = md[:, None] & mn[None, :]
    tile = dd[:, None] * n + nn[None, :]
    A2 = tl.load(a2 + tile, mask=m2, other=0.0)
    A = tl.load(Ap + tile, mask=m2, other=0.0)  # d exp(delta A) / d delta = A dA
    row = tl.full([], 0, tl.int64) + pb
    if HAS_GH:
        g_h = tl.load(ghT + row * d * n + tile, mask=m2, other=0.0)
    else:
        g_h = tl.zeros([BD, NP], dtype=A2.dtype)
    if HAS_D:
        Dv = tl.load(Dp + dd, mask=md, other=0.0)
    g_A = tl.zeros([BD, NP], dtype=A2.dtype)
    g_D = tl.zeros([BD], dtype=A2.dtype)
    own = scratch + row * d * n + tile  # this program's [BD, NP] slot of scratch[k, b, d, n]
    slot = b * d * n
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        c64 = tl.full([], 0, tl.int64) + c
        ts = c64 * K
        te = tl.minimum(ts + K, T)
        start = tl.load(ckpt + (c64 * b + row) * d * n + tile, mask=m2, other=0.0)
        # the chunk's states, recomputed into scratch
        h = start
        for t in range(ts, te):
            at_d = (t * b + row) * d + dd
            at_n = (t * b + row) * n + nn
            ut = tl.load(u + at_d, mask=md, other=0.0)
            dt = tl.load(delta + at_d, mask=md, other=0.0)
            Bt = tl.load(B + at_n, mask=mn, other=0.0)
            dA = tl.exp2(dt[:, None] * A2)
            h = tl.fma(dA, h, (dt * ut)[:, None] * Bt[None, :])
            tl.store(own + (t - ts) * slot, h, mask=m2)
        tl.debug_barrier()
        for i in range(te - ts):
            t = te - 1 - i
            at_d = (t * b + row) * d + dd
            at_n = (t * b + row) * n + nn
            ut = tl.load(u + at_d, mask=md, other=0.0)
            dt = tl.load(delta + at_d, mask=md, other=0.0)
            Bt = tl.load(B + at_n, mask=mn, other=0.0)
            Ct = tl.load(C + at_n, mask=mn, other=0.0)
            gyt = tl.load(gy + at_d, mask=md, other=0.0)
            h_t = tl.load(own + (t - ts) * slot, mask=m2, other=0.0)
            has_prev = (m2.to(tl.int32) * 0 + t) > ts  # a tile: Triton's interpreter cannot AND a tile with a scalar
            h_p = tl.load(own + (t - ts - 1) * slot, mask=m2 & has_prev, other=0.0)
            h_p = tl.where(t > ts, h_p, start)
            # y_t = C_t . h_t + D u_t
            g_h += gyt[:, None] * Ct[None, :]
            tl.store(gC_part + ((pd * T + t) * b + row) * n + nn, tl.sum(gyt[:, None] * h_t, axis=0), mask=mn)
            # h_t = dA h_{t-1} + (delta u) B_t,  dA = exp(delta A)
            dA = tl.exp2(dt[:, None] * A2)
            q = g_h * h_p * dA  # dL / d(delta A), per state
            g_A += q * dt[:, None]
            x = tl.sum(g_h * Bt[None, :], axis=1)  # dL / d(delta u)
            du = dt * ut
            tl.store(gB_part + ((pd * T + t) * b + row) * n + nn, tl.sum(g_h * du[:, None], axis=0), mask=mn)
            g_delta = tl.sum(q * A, axis=1) + x * ut
            g_u = x * dt
            if HAS_D:
                g_u += gyt * Dv
                g_D += gyt * ut
            tl.store(gdelta + at_d, g_delta, mask=md)
            tl.store(gu + at_d, g_u, mask=md)
            g_h = g_h * dA
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(gh0 + row * d * n + tile, g_h, mask=m2)
    tl.store(gA_part + row * d * n + tile, g_A, mask=m2)
    if HAS_D:
        tl.store(gD_part + row * d + dd, g_D, mask=md)
