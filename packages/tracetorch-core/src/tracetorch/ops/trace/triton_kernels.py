"""The Triton kernels behind :mod:`tracetorch.ops.trace.triton` (imported only where Triton is installed): one program
owns ``BLOCK`` consecutive elements of a step and loops over time; the decays are gathered per element from P-long
vectors (element ``e`` uses index ``(e // J) % P``, as the firing kernels)."""

# ruff: noqa: SIM108 (constexpr branches: only one is compiled)

import triton
import triton.language as tl


@triton.jit
def fwd(x, h0, nh0, Y, H, NH, hT, nhT, p_a, p_oma, p_na, p_ona, T, n, P, J,
        DUAL: tl.constexpr, EMA: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pi = (offs // J) % P
    a = tl.load(p_a + pi, mask=mask)
    h = tl.load(h0 + offs, mask=mask)
    zero = h * 0.0
    if EMA:
        oma = tl.load(p_oma + pi, mask=mask)
    if DUAL:
        na = tl.load(p_na + pi, mask=mask)
        nh = tl.load(nh0 + offs, mask=mask)
        if EMA:
            ona = tl.load(p_ona + pi, mask=mask)
    for t in range(T):
        at = (tl.full([], 0, tl.int64) + t) * n + offs
        xt = tl.load(x + at, mask=mask)
        if DUAL:  # [x]+ and [x]- as torch's clamp (a NaN stays NaN in both)
            xp = tl.where(xt < 0.0, zero, xt)
            xn = tl.where(xt > 0.0, zero, xt)
            if EMA:
                xp = oma * xp
                xn = ona * xn
            h = tl.fma(a, h, xp)
            nh = tl.fma(na, nh, xn)
            if SAVE:
                tl.store(H + at, h, mask=mask)
                tl.store(NH + at, nh, mask=mask)
            tl.store(Y + at, h + nh, mask=mask)
        else:
            if EMA:
                xt = oma * xt
            h = tl.fma(a, h, xt)
            tl.store(Y + at, h, mask=mask)
    tl.store(hT + offs, h, mask=mask)
    if DUAL:
        tl.store(nhT + offs, nh, mask=mask)


@triton.jit
def adjoint_step(g, decay, gy, H, gT, offs, at, n, mask, first, after_first, last, HAS_GT: tl.constexpr):
    """One trace's reverse step: its adjoint ``G_t = gy_t + a G_{t+1}`` (at T - 1: gy plus the final state's
    gradient ``gT``, if given) and the decay's partial ``G_t h_{t-1}`` (``h_{-1}``: ``first``)."""
    if HAS_GT:
        g_last = gy + tl.load(gT + offs, mask=mask)
    else:
        g_last = gy
    g = tl.where(last, g_last, tl.fma(decay, g, gy))
    hp = tl.load(H + (at - n), mask=mask & after_first, other=0.0)
    return g, g * tl.where(after_first, hp, first)


@triton.jit
def bwd(gY, x, H, NH, h0, nh0, ghT, gnhT, gX, gh0, gnh0, acc, p_a, p_oma, p_na, p_ona, T, n, P, J,
        HAS_GHT: tl.constexpr, HAS_GNHT: tl.constexpr, WANT_GX: tl.constexpr,
        DUAL: tl.constexpr, EMA: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pi = (offs // J) % P
    a = tl.load(p_a + pi, mask=mask)
    first = tl.load(h0 + offs, mask=mask)
    zero = first * 0.0
    g = zero
    aa = zero
    if EMA:
        oma = tl.load(p_oma + pi, mask=mask)
    if DUAL:
        na = tl.load(p_na + pi, mask=mask)
        nfirst = tl.load(nh0 + offs, mask=mask)
        gn = zero
        an = zero
        if EMA:
            ona = tl.load(p_ona + pi, mask=mask)
    for i in range(T):
        tv = tl.full([], 0, tl.int64) + (T - 1 - i)
        at = tv * n + offs
        after_first = (offs * 0 + tv) > 0  # a vector: Triton's interpreter cannot AND a vector with a scalar
        last = (offs * 0 + tv) == T - 1
        gy = tl.load(gY + at, mask=mask)
        g, part = adjoint_step(g, a, gy, H, ghT, offs, at, n, mask, first, after_first, last, HAS_GHT)
        aa += part
        if DUAL:
            gn, npart = adjoint_step(gn, na, gy, NH, gnhT, offs, at, n, mask, nfirst, after_first, last, HAS_GNHT)
            an += npart
            xt = tl.load(x + at, mask=mask)
            if EMA:
                aa -= g * tl.where(xt < 0.0, zero, xt)
                an -= gn * tl.where(xt > 0.0, zero, xt)
                gp = oma * g
                gq = ona * gn
            else:
                gp = g
                gq = gn
            if WANT_GX:
                tl.store(gX + at, tl.where(xt >= 0.0, gp, zero) + tl.where(xt <= 0.0, gq, zero), mask=mask)
        else:
            if EMA:
                xt = tl.load(x + at, mask=mask)
                aa -= g * xt
                if WANT_GX:
                    tl.store(gX + at, oma * g, mask=mask)
            elif WANT_GX:
                tl.store(gX + at, g, mask=mask)
    tl.store(gh0 + offs, a * g, mask=mask)
    tl.store(acc + offs, aa, mask=mask)
    if DUAL:
        tl.store(gnh0 + offs, na * gn, mask=mask)
        tl.store(acc + n + offs, an, mask=mask)
