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
def fwd(u, mem0, nmem0, rec0, nrec0, Y, M, NM, R, NR, memT, nmemT, recT, nrecT,
        p_beta, p_te, p_nt, p_nth, p_nnte, p_kp, p_kn, p_gamma, p_omg, p_w, p_nbeta, p_ngamma, p_omng, p_nw,
        T, n, P, J,
        DUAL: tl.constexpr, TERN: tl.constexpr, TS: tl.constexpr, REC: tl.constexpr, SAVE: tl.constexpr,
        BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pi = (offs // J) % P
    beta = tl.load(p_beta + pi, mask=mask)
    te = tl.load(p_te + pi, mask=mask)
    nt = tl.load(p_nt + pi, mask=mask)
    mem = tl.load(mem0 + offs, mask=mask)
    zero = mem * 0.0
    if DUAL:
        nbeta = tl.load(p_nbeta + pi, mask=mask)
        nmem = tl.load(nmem0 + offs, mask=mask)
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
        if DUAL and TERN:  # two traces, one per sign of the output
            ngamma = tl.load(p_ngamma + pi, mask=mask)
            omng = tl.load(p_omng + pi, mask=mask)
            nw = tl.load(p_nw + pi, mask=mask)
            nrec = tl.load(nrec0 + offs, mask=mask)
    for t in range(T):
        at = (tl.full([], 0, tl.int64) + t) * n + offs
        x = tl.load(u + at, mask=mask)
        if DUAL:  # the drive split by sign ([v]+ and [v]- as torch's clamp: a NaN stays NaN in both)
            drive = tl.where(x < 0.0, zero, x)
            ndrive = tl.where(x > 0.0, zero, x)
            if REC:
                if TERN:
                    r = rec + nrec
                    drive = tl.fma(w, tl.where(r < 0.0, zero, r), drive)
                    ndrive = tl.fma(nw, tl.where(r > 0.0, zero, r), ndrive)
                else:
                    drive = tl.fma(w, rec, drive)
            pm = tl.fma(beta, mem, drive)
            npm = tl.fma(nbeta, nmem, ndrive)
            m = pm + npm
        else:
            drive = x
            if REC:
                drive = tl.fma(w, rec, drive)
            m = tl.fma(beta, mem, drive)
            pm = m
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
            tl.store(M + at, pm, mask=mask)
        mem = pm + sp * nt
        if DUAL:
            if SAVE:
                tl.store(NM + at, npm, mask=mask)
            if TERN:
                nmem = npm + sn * nth
            else:
                nmem = npm
        elif TERN:
            mem = mem + sn * nth
        if REC:
            if DUAL and TERN:
                rec = tl.fma(gamma, rec, omg * tl.where(out < 0.0, zero, out))
                nrec = tl.fma(ngamma, nrec, omng * tl.where(out > 0.0, zero, out))
                if SAVE:
                    tl.store(R + at, rec, mask=mask)
                    tl.store(NR + at, nrec, mask=mask)
            else:
                rec = tl.fma(gamma, rec, omg * out)
                if SAVE:
                    tl.store(R + at, rec, mask=mask)
    tl.store(memT + offs, mem, mask=mask)
    if DUAL:
        tl.store(nmemT + offs, nmem, mask=mask)
    if REC:
        tl.store(recT + offs, rec, mask=mask)
        if DUAL and TERN:
            tl.store(nrecT + offs, nrec, mask=mask)


@triton.jit
def bwd(gY, u, M, NM, R, NR, mem0, nmem0, rec0, nrec0, gmemT, gnmemT, grecT, gnrecT, gU, gmem0, gnmem0, grec0,
        gnrec0, acc,
        p_beta, p_te, p_nt, p_nth, p_nnte, p_kp, p_kn, p_gamma, p_omg, p_w, p_nbeta, p_ngamma, p_omng, p_nw,
        T, n, P, J, consts,
        DUAL: tl.constexpr, TERN: tl.constexpr, TS: tl.constexpr, REC: tl.constexpr, KIND: tl.constexpr,
        HAS_GMEM: tl.constexpr, HAS_GREC: tl.constexpr, WANT_GU: tl.constexpr,
        A_BETA: tl.constexpr, A_VP: tl.constexpr, A_RP: tl.constexpr, A_VN: tl.constexpr, A_RN: tl.constexpr,
        A_KP: tl.constexpr, A_KN: tl.constexpr, A_GAMMA: tl.constexpr, A_W: tl.constexpr, A_NBETA: tl.constexpr,
        A_NGAMMA: tl.constexpr, A_NW: tl.constexpr,
        BLOCK: tl.constexpr):  # fmt: skip
    DREC: tl.constexpr = DUAL and REC and TERN
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
    if DUAL:
        nbeta = tl.load(p_nbeta + pi, mask=mask)
        nm0 = tl.load(nmem0 + offs, mask=mask)
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
        if DREC:
            ngamma = tl.load(p_ngamma + pi, mask=mask)
            omng = tl.load(p_omng + pi, mask=mask)
            nw = tl.load(p_nw + pi, mask=mask)
            nr0 = tl.load(nrec0 + offs, mask=mask)
    if HAS_GMEM:  # the final states' gradients come together (all given, or none)
        g = tl.load(gmemT + offs, mask=mask)
        if DUAL:
            gn = tl.load(gnmemT + offs, mask=mask)
    else:
        g = zero
        gn = zero
    if HAS_GREC:
        gr = tl.load(grecT + offs, mask=mask)
        if DREC:
            gnr = tl.load(gnrecT + offs, mask=mask)
    else:
        gr = zero
        gnr = zero
    a_beta = zero
    a_vp = zero
    a_rp = zero
    a_vn = zero
    a_rn = zero
    a_kp = zero
    a_kn = zero
    a_gamma = zero
    a_w = zero
    a_nbeta = zero
    a_ngamma = zero
    a_nw = zero
    last = tl.full([], 0, tl.int64) + (T - 1)
    pm = tl.load(M + last * n + offs, mask=mask)
    if DUAL:
        npm = tl.load(NM + last * n + offs, mask=mask)
        m = pm + npm
    else:
        m = pm
    if REC:
        rprev = zero
        nrprev = zero
    for i in range(T):
        tv = tl.full([], 0, tl.int64) + (T - 1 - i)  # the step, as a tensor (also in Triton's interpreter)
        at = tv * n + offs
        after_first = (offs * 0 + tv) > 0  # a vector: Triton's interpreter cannot AND a vector with a scalar
        # the previous membranes and traces (the initial ones before the first step)
        mp = tl.load(M + (at - n), mask=mask & after_first, other=0.0)
        mp = tl.where(after_first, mp, m0)
        if DUAL:
            nmp = tl.load(NM + (at - n), mask=mask & after_first, other=0.0)
            nmp = tl.where(after_first, nmp, nm0)
            mprev = mp + nmp  # the previous step fired on the sum
        else:
            mprev = mp
        sp = (m >= te).to(m.dtype)
        if TERN:
            sn = (m <= nnte).to(m.dtype)
            out = sp - sn
        else:
            out = sp
        if REC:
            rprev = tl.load(R + (at - n), mask=mask & after_first, other=0.0)
            rprev = tl.where(after_first, rprev, r0)
            if DREC:
                nrprev = tl.load(NR + (at - n), mask=mask & after_first, other=0.0)
                nrprev = tl.where(after_first, nrprev, nr0)
                a_gamma += gr * (rprev - tl.where(out < 0.0, zero, out))
                a_ngamma += gnr * (nrprev - tl.where(out > 0.0, zero, out))
                g_out = tl.where(out >= 0.0, omg * gr, zero) + tl.where(out <= 0.0, omng * gnr, zero)
                gr = gamma * gr
                gnr = ngamma * gnr
            else:
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
        if DUAL:  # each sign resets its own membrane
            gneg = gn
        else:
            gneg = g
        a_rp += sp * g
        g_sp += reset_on * (g * nt)
        if TERN:
            a_rn += sn * gneg
            g_sn += reset_on * (gneg * nth)
        sb = g_sp * surrogate(m - te, slope, KIND)
        a_vp += sb
        gpre = g + sb
        if TERN:
            sbn = g_sn * surrogate(nnte - m, slope, KIND)
            a_vn += sbn
            gpre -= sbn
        if DUAL:
            gnpre = gneg + sb
            if TERN:
                gnpre -= sbn
            if WANT_GU:  # the drive's sign split: d[u]+/du = (u >= 0), d[u]-/du = (u <= 0)
                x = tl.load(u + at, mask=mask)
                tl.store(gU + at, tl.where(x >= 0.0, gpre, zero) + tl.where(x <= 0.0, gnpre, zero), mask=mask)
        elif WANT_GU:
            tl.store(gU + at, gpre, mask=mask)
        has_prev = after_first.to(m.dtype)
        prev = mp + tl.where(mprev >= te, has_prev, 0.0) * nt
        if DUAL:
            if TERN:
                nprev = nmp + tl.where(mprev <= nnte, has_prev, 0.0) * nth
            else:
                nprev = nmp
            a_nbeta += gnpre * nprev
            gn = nbeta * gnpre
        elif TERN:
            prev = prev + tl.where(mprev <= nnte, has_prev, 0.0) * nth
        a_beta += gpre * prev
        g = beta * gpre
        if REC:
            if DREC:
                r = rprev + nrprev
                a_w += gpre * tl.where(r < 0.0, zero, r)
                a_nw += gnpre * tl.where(r > 0.0, zero, r)
                g_r = tl.where(r >= 0.0, w * gpre, zero) + tl.where(r <= 0.0, nw * gnpre, zero)
                gr = gr + g_r
                gnr = gnr + g_r
            else:
                a_w += gpre * rprev
                gr = gr + w * gpre
        m = mprev
    tl.store(gmem0 + offs, g, mask=mask)
    if DUAL:
        tl.store(gnmem0 + offs, gn, mask=mask)
    if REC:
        tl.store(grec0 + offs, gr, mask=mask)
        if DREC:
            tl.store(gnrec0 + offs, gnr, mask=mask)
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
    if A_NBETA >= 0:
        tl.store(acc + A_NBETA * n + offs, a_nbeta, mask=mask)
    if A_NGAMMA >= 0:
        tl.store(acc + A_NGAMMA * n + offs, a_ngamma, mask=mask)
    if A_NW >= 0:
        tl.store(acc + A_NW * n + offs, a_nw, mask=mask)
