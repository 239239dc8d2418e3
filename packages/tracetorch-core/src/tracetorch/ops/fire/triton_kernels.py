"""The Triton kernels behind :mod:`tracetorch.ops.fire.triton` (imported only where Triton is installed).

Module level, as Triton requires of the functions a kernel calls. One program owns ``BLOCK`` consecutive
elements of a step and loops over time; the parameters are gathered per element from P-long vectors
(element ``e`` uses index ``(e // J) % P``, see :func:`tracetorch.ops.fire.native.param_layout`).
"""

# ruff: noqa: SIM108 (constexpr branches: only one is compiled)

import triton
import triton.language as tl


@triton.jit
def surrogate(v, k, KIND: tl.constexpr):  # k: the slope, in v's dtype
    if KIND == 0:
        s = 1.0 / (1.0 + tl.exp(-(k * v)))
        r = k * s * (1.0 - s)
    elif KIND == 1:
        z = tl.full([], 1.5707963267948966, v.dtype) * k * v
        r = (k / 2.0) / (1.0 + z * z)
    elif KIND == 2:
        z = 1.0 + k * tl.abs(v)
        r = 1.0 / (z * z)
    else:
        r = tl.maximum(1.0 - k * tl.abs(v), 0.0)
    return r


@triton.jit
def fwd(u, mem0, rec0, Y, M, R, memT, recT,
        p_beta, p_te, p_nt, p_nth, p_nnte, p_kp, p_kn, p_gamma, p_omg, p_w,
        T, n, P, J,
        TERN: tl.constexpr, TS: tl.constexpr, REC: tl.constexpr, SAVE: tl.constexpr,
        BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pi = (offs // J) % P
    beta = tl.load(p_beta + pi, mask=mask)
    te = tl.load(p_te + pi, mask=mask)
    nt = tl.load(p_nt + pi, mask=mask)
    mem = tl.load(mem0 + offs, mask=mask)
    if TERN:
        nth = tl.load(p_nth + pi, mask=mask)
        nnte = tl.load(p_nnte + pi, mask=mask)
    if TS:
        kp = tl.load(p_kp + pi, mask=mask)
        kn = tl.load(p_kn + pi, mask=mask)
    if REC:
        gamma = tl.load(p_gamma + pi, mask=mask)
        omg = tl.load(p_omg + pi, mask=mask)
        w = tl.load(p_w + pi, mask=mask)
        rec = tl.load(rec0 + offs, mask=mask)
    for t in range(T):
        at = (tl.full([], 0, tl.int64) + t) * n + offs
        drive = tl.load(u + at, mask=mask)
        if REC:
            drive = tl.fma(w, rec, drive)
        m = tl.fma(beta, mem, drive)
        sp = (m >= te).to(m.dtype)
        if TERN:
            sn = (m <= nnte).to(m.dtype)
            out = sp - sn
        else:
            out = sp
        if TS:
            tl.store(Y + at, kp * sp - kn * sn, mask=mask)
        else:
            tl.store(Y + at, out, mask=mask)
        if SAVE:
            tl.store(M + at, m, mask=mask)
        mem = m + sp * nt
        if TERN:
            mem = mem + sn * nth
        if REC:
            rec = tl.fma(gamma, rec, omg * out)
            if SAVE:
                tl.store(R + at, rec, mask=mask)
    tl.store(memT + offs, mem, mask=mask)
    if REC:
        tl.store(recT + offs, rec, mask=mask)


@triton.jit
def bwd(gY, M, R, mem0, rec0, gmemT, grecT, gU, gmem0, grec0, acc,
        p_beta, p_te, p_nt, p_nth, p_nnte, p_kp, p_kn, p_gamma, p_omg, p_w,
        T, n, P, J, consts,
        TERN: tl.constexpr, TS: tl.constexpr, REC: tl.constexpr, KIND: tl.constexpr,
        HAS_GMEM: tl.constexpr, HAS_GREC: tl.constexpr, WANT_GU: tl.constexpr,
        A_BETA: tl.constexpr, A_VP: tl.constexpr, A_RP: tl.constexpr, A_VN: tl.constexpr, A_RN: tl.constexpr,
        A_KP: tl.constexpr, A_KN: tl.constexpr, A_GAMMA: tl.constexpr, A_W: tl.constexpr,
        BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pi = (offs // J) % P
    slope = tl.load(consts)  # the slope and 1 (0: detach_reset), in the tensors' dtype
    reset_on = tl.load(consts + 1)
    beta = tl.load(p_beta + pi, mask=mask)
    te = tl.load(p_te + pi, mask=mask)
    nt = tl.load(p_nt + pi, mask=mask)
    m0 = tl.load(mem0 + offs, mask=mask)
    zero = m0 * 0.0
    if TERN:
        nth = tl.load(p_nth + pi, mask=mask)
        nnte = tl.load(p_nnte + pi, mask=mask)
    if TS:
        kp = tl.load(p_kp + pi, mask=mask)
        kn = tl.load(p_kn + pi, mask=mask)
    if REC:
        gamma = tl.load(p_gamma + pi, mask=mask)
        omg = tl.load(p_omg + pi, mask=mask)
        w = tl.load(p_w + pi, mask=mask)
        r0 = tl.load(rec0 + offs, mask=mask)
    if HAS_GMEM:
        g = tl.load(gmemT + offs, mask=mask)
    else:
        g = zero
    if HAS_GREC:
        gr = tl.load(grecT + offs, mask=mask)
    else:
        gr = zero
    a_beta = zero
    a_vp = zero
    a_rp = zero
    a_vn = zero
    a_rn = zero
    a_kp = zero
    a_kn = zero
    a_gamma = zero
    a_w = zero
    last = tl.full([], 0, tl.int64) + (T - 1)
    m = tl.load(M + last * n + offs, mask=mask)
    if REC:
        rprev = zero
    for i in range(T):
        t = T - 1 - i
        at = (tl.full([], 0, tl.int64) + t) * n + offs
        # the previous membrane and trace (the initial ones before the first step)
        mp = tl.load(M + (at - n), mask=mask & (t > 0), other=0.0)
        mp = tl.where(t > 0, mp, m0)
        sp = (m >= te).to(m.dtype)
        if TERN:
            sn = (m <= nnte).to(m.dtype)
        if REC:
            rprev = tl.load(R + (at - n), mask=mask & (t > 0), other=0.0)
            rprev = tl.where(t > 0, rprev, r0)
            if TERN:
                out = sp - sn
            else:
                out = sp
            a_gamma += gr * (rprev - out)
            g_out = omg * gr
            gr = gamma * gr
        gy = tl.load(gY + at, mask=mask)
        if TS:
            a_kp += gy * sp
            a_kn -= gy * sn
            g_sp = kp * gy
            g_sn = -(kn * gy)
            if REC:
                g_sp += g_out
                g_sn -= g_out
        else:
            g_sp = gy
            if REC:
                g_sp += g_out
            if TERN:
                g_sn = -g_sp
        a_rp += sp * g
        g_sp += reset_on * (g * nt)
        if TERN:
            a_rn += sn * g
            g_sn += reset_on * (g * nth)
        sb = g_sp * surrogate(m - te, slope, KIND)
        a_vp += sb
        gpre = g + sb
        if TERN:
            sbn = g_sn * surrogate(nnte - m, slope, KIND)
            a_vn += sbn
            gpre -= sbn
        if WANT_GU:
            tl.store(gU + at, gpre, mask=mask)
        has_prev = (t > 0).to(m.dtype)
        prev = mp + tl.where(mp >= te, has_prev, 0.0) * nt
        if TERN:
            prev = prev + tl.where(mp <= nnte, has_prev, 0.0) * nth
        a_beta += gpre * prev
        g = beta * gpre
        if REC:
            a_w += gpre * rprev
            gr = gr + w * gpre
        m = mp
    tl.store(gmem0 + offs, g, mask=mask)
    if REC:
        tl.store(grec0 + offs, gr, mask=mask)
    if A_BETA >= 0:
        tl.store(acc + A_BETA * n + offs, a_beta, mask=mask)
    if A_VP >= 0:
        tl.store(acc + A_VP * n + offs, a_vp, mask=mask)
    if A_RP >= 0:
        tl.store(acc + A_RP * n + offs, a_rp, mask=mask)
    if A_VN >= 0:
        tl.store(acc + A_VN * n + offs, a_vn, mask=mask)
    if A_RN >= 0:
        tl.store(acc + A_RN * n + offs, a_rn, mask=mask)
    if A_KP >= 0:
        tl.store(acc + A_KP * n + offs, a_kp, mask=mask)
    if A_KN >= 0:
        tl.store(acc + A_KN * n + offs, a_kn, mask=mask)
    if A_GAMMA >= 0:
        tl.store(acc + A_GAMMA * n + offs, a_gamma, mask=mask)
    if A_W >= 0:
        tl.store(acc + A_W * n + offs, a_w, mask=mask)
