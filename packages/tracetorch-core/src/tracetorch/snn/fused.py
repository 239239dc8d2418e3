"""Fused whole-sequence kernel for the firing neuron types (B, T, TS; any of D, R), one autograd node.

Reference: the step loop over :func:`tracetorch.functional.neuron_step`; tests compare outputs, final states
and gradients for all 24 firing types. What makes this fast:

* no autograd graph per step: the forward loop runs without autograd and writes into preallocated buffers
  with the same ops as the reference (so outputs are bit-identical);
* the backward is written out by hand, in reverse time, over element-wise adjoints;
* parameters are activated once per sequence (by the layer) and their gradients are accumulated
  element-wise in place and reduced over the batch once at the end;
* binary spikes are written straight into float buffers (``torch.ge(..., out=)``), no bool tensors;
* memory: one saved tensor per step for the pre-reset membrane (two under D) plus the recurrent trace (R);
  the reset membrane and the spikes are recomputed in the backward (binary spikes are the outputs; sampled
  ternary spikes are saved). Saved buffers come from a small pool (:mod:`tracetorch.ops.workspace`), since
  fresh large buffers cost a page fault per 4 KiB; without autograd nothing is saved.

The synaptic stage (S) and the sign split (D) are linear / element-wise and need no state of the firing
core, so they run before it as ordinary autograd ops (:mod:`tracetorch.snn.sequence`, one ``linear_scan``).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..functional.spike import SpikeFunction, fire, surrogate_grad
from ..functional.spiking import NeuronSpec
from ..layer import normal_tensors
from ..ops import native, triton_fire
from ..ops.workspace import give_back_when_dead, take

__all__ = ["fast_native_step", "fused_firing_sequence", "stream_step"]


class _Cfg(NamedTuple):
    spec: NeuronSpec
    mode: str
    surrogate: str
    slope: float
    detach_reset: bool
    grad: bool = True  # autograd was on at the call (forward() itself always runs with it off)


def _fire_pos(m: Tensor, thr_e: Tensor, cfg: _Cfg, out: Tensor | None = None) -> Tensor:
    """``f(m - thr_e)``, into ``out`` if given. Heaviside: ``m >= thr_e`` is exactly ``m - thr_e >= 0`` for
    finite floats (IEEE subtraction is monotonic and never rounds a nonzero difference to zero)."""
    if cfg.mode == "heaviside":
        return torch.ge(m, thr_e, out=torch.empty_like(m) if out is None else out)
    s = fire(m - thr_e, cfg.mode, cfg.slope)
    return s if out is None else out.copy_(s)


def _fire_neg(m: Tensor, neg_thr_e: Tensor, cfg: _Cfg) -> Tensor:
    """``f(neg_thr_e - m)``, the magnitude of a negative spike."""
    if cfg.mode == "heaviside":
        out = torch.empty_like(m)
        return torch.le(m, neg_thr_e, out=out)
    return fire(neg_thr_e - m, cfg.mode, cfg.slope)


def _native_ok(cfg: _Cfg, u: Tensor) -> bool:
    """Whether the native kernels cover this call (a single-branch firing type: B, T or TS, with or without R;
    Heaviside; float32/64 on the CPU) and are loaded (:mod:`tracetorch.ops.native`)."""
    if cfg.spec.dual or cfg.mode != "heaviside":
        return False
    if u.device.type != "cpu" or u.dtype not in (torch.float32, torch.float64):
        return False
    return native.variant_kernels(_variant(cfg.spec), u.dtype) is not None


def _sequence_kernels(cfg: _Cfg, u: Tensor):
    """The whole-sequence kernels that cover this call, or ``None`` (then the torch kernels below run): the native
    C ones on the CPU (:func:`_native_ok`), the Triton ones on CUDA (:mod:`tracetorch.ops.triton_fire`); both for
    the single-branch firing types with Heaviside spikes."""
    if u.device.type == "cpu":
        return native if _native_ok(cfg, u) else None
    if cfg.spec.dual or cfg.mode != "heaviside" or not triton_fire.usable(u):
        return None
    return triton_fire


def _variant(spec: NeuronSpec) -> str:
    return {"B": "b", "T": "t", "TS": "ts"}[spec.family] + ("r" if spec.recurrent else "")


class _NativePlan(NamedTuple):
    """Parameters flattened for the native kernels (:func:`tracetorch.ops.native.param_layout`), by the names
    of :data:`tracetorch.ops.native.PARAM_SLOTS`."""

    layout: tuple[int, int, int]
    index: tuple[slice, ...]
    params: dict[str, Tensor]


def _native_plan(step_shape: tuple[int, ...], **raw: Tensor | None) -> _NativePlan:
    """From the effective parameters (``beta, thr, bias`` and where the type has them ``nthr, kp, kn, gamma,
    w``), the derived ones the kernels read, each computed as the torch kernels compute it."""
    given = {k: v for k, v in raw.items() if v is not None}
    *layout, index = native.param_layout(step_shape, list(given.values()))
    f = {k: native.flat_param(v, step_shape, index) for k, v in given.items()}
    params = {"beta": f["beta"], "thr_e": f["thr"] - f["bias"], "neg_thr": -f["thr"]}
    if "nthr" in f:
        params |= {"nthr": f["nthr"], "nnthr_e": -(f["nthr"] + f["bias"])}
    if "kp" in f:
        params |= {"kp": f["kp"], "kn": f["kn"]}
    if "gamma" in f:
        params |= {"gamma": f["gamma"], "one_m_gamma": 1 - f["gamma"], "w": f["w"]}
    return _NativePlan(tuple(layout), index, params)


def _from_flat(acc: Tensor, plan: _NativePlan, step_shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A P-long gradient accumulator back in the shape of the parameter ``like``."""
    block = [step_shape[d] if s == slice(None) else 1 for d, s in enumerate(plan.index)]
    return acc.reshape(block).sum_to_size(like.shape)


_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # resolved once: torch.ops lookups are slow


class _Consts:
    """Per-sequence constants derived from the parameters (shared by forward, backward and streaming)."""

    def __init__(self, cfg: _Cfg, beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw) -> None:
        spec = cfg.spec
        self.cfg = cfg
        self.dual, self.rec_on, self.dual_rec = spec.dual, spec.recurrent, spec.dual_rec
        self.tern, self.ts = spec.ternary, spec.family == "TS"
        self.beta, self.nbeta, self.gamma, self.ngamma = beta, nbeta, gamma, ngamma
        self.thr, self.nthr, self.bias, self.kp, self.kn, self.w, self.nw = thr, nthr, bias, kp, kn, w, nw
        self.thr_e = thr - bias
        self.neg_thr = -thr
        self.neg_nthr_e = -(nthr + bias) if self.tern else None
        self.one_m_g = 1 - gamma if self.rec_on else None
        self.one_m_ng = 1 - ngamma if self.dual_rec else None


def _step(c: _Consts, i_pos, i_neg, mem, nm, rec, nr, y, m_pre, nm_pre, mem_out, nm_out, rec_out, nr_out):
    """One forward step without autograd, the same ops as ``neuron_step``. Buffers (``*_out``, ``y``,
    ``m_pre``, ``nm_pre``) may be ``None`` (then fresh tensors are made). Returns the new states and the
    spikes ``(mem, nm, rec, nr, sp, sn)``."""
    cfg = c.cfg
    if c.rec_on:
        if c.dual_rec:
            r = rec + nr
            i_pos = torch.addcmul(i_pos, c.w, r.clamp(min=0))
            i_neg = torch.addcmul(i_neg, c.nw, r.clamp(max=0))
        else:
            i_pos = torch.addcmul(i_pos, c.w, rec)
    if c.dual:
        pm = torch.addcmul(i_pos, c.beta, mem, out=m_pre) if m_pre is not None else torch.addcmul(i_pos, c.beta, mem)
        npm = torch.addcmul(i_neg, c.nbeta, nm, out=nm_pre) if nm_pre is not None else torch.addcmul(i_neg, c.nbeta, nm)
        m = pm + npm
    else:
        pm = npm = None
        m = torch.addcmul(i_pos, c.beta, mem, out=m_pre) if m_pre is not None else torch.addcmul(i_pos, c.beta, mem)
    sn = None
    if c.tern:
        sp = _fire_pos(m, c.thr_e, cfg)
        sn = _fire_neg(m, c.neg_nthr_e, cfg)
        if c.ts:
            out = sp - sn
            y = torch.sub(c.kp * sp, c.kn * sn, out=y) if y is not None else c.kp * sp - c.kn * sn
        else:
            out = torch.sub(sp, sn, out=y) if y is not None else sp - sn
    else:
        out = sp = _fire_pos(m, c.thr_e, cfg, out=y)
    # reset
    base = pm if c.dual else m
    mem = torch.addcmul(base, sp, c.neg_thr, out=mem_out) if mem_out is not None else torch.addcmul(base, sp, c.neg_thr)
    if c.dual:
        if c.tern:
            nm = torch.addcmul(npm, sn, c.nthr, out=nm_out) if nm_out is not None else torch.addcmul(npm, sn, c.nthr)
        else:
            nm = nm_out.copy_(npm) if nm_out is not None else npm
    elif c.tern:
        mem.addcmul_(sn, c.nthr)
    if c.rec_on:
        if c.dual_rec:
            po, no = out.clamp(min=0), out.clamp(max=0)
            rec = torch.addcmul(c.one_m_g * po, c.gamma, rec, out=rec_out)
            nr = torch.addcmul(c.one_m_ng * no, c.ngamma, nr, out=nr_out)
        else:
            ro = c.one_m_g * out
            rec = (
                torch.addcmul(ro, c.gamma, rec, out=rec_out) if rec_out is not None else torch.addcmul(ro, c.gamma, rec)
            )
    return mem, nm, rec, nr, sp, sn


class _FiringCore(torch.autograd.Function):
    """Inputs: drives ``u`` (``dn``: negative drive under D) ``[T, ...]``; initial states; parameters (shaped
    to broadcast). Absent ones are ``None``. Outputs: ``y [T, ...]`` and the final states."""

    @staticmethod
    def forward(
        ctx, cfg: _Cfg, u, dn, mem0, nm0, rec0, nr0, beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw
    ):
        need = cfg.grad and any(ctx.needs_input_grad[1:])
        kernels = _sequence_kernels(cfg, u)
        if kernels is not None:
            p = {"beta": beta, "gamma": gamma, "thr": thr, "nthr": nthr, "bias": bias, "kp": kp, "kn": kn, "w": w}
            try:
                return _native_forward(ctx, cfg, need, u, mem0, rec0, p, kernels)
            except Exception as exc:
                if kernels is not triton_fire:
                    raise
                # a Triton kernel that does not compile or launch here: say so once, then the torch kernels run
                triton_fire.disable(f"{type(exc).__name__}: {exc}")
                warnings.warn(f"tracetorch: Triton firing kernels disabled ({exc}); using the torch kernels",
                              RuntimeWarning, stacklevel=2)  # fmt: skip
        ctx.plan = None
        c = _Consts(cfg, beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw)
        dual, rec_on, dual_rec = c.dual, c.rec_on, c.dual_rec
        T = u.shape[0]

        def saved(on: bool) -> Tensor | None:
            return take(u) if on and need else None

        # Saved for the backward (from the workspace pool): the pre-reset membrane and the recurrent trace.
        # Reset membranes and binary spikes are recomputed; sampled ternary spikes are saved.
        Y = torch.empty_like(u)
        M, NM = saved(True), saved(dual)
        REC, NREC = saved(rec_on), saved(dual_rec)
        keep_spikes = cfg.mode == "stochastic" and c.tern
        SP, SN = saved(keep_spikes), saved(keep_spikes)

        def views(b: Tensor | None) -> tuple:
            return b.unbind(0) if b is not None else (None,) * T

        us, dns, ys, ms, nms, recs, nrecs = map(views, (u, dn, Y, M, NM, REC, NREC))
        mem, nm, rec, nr = mem0, nm0, rec0, nr0
        for t in range(T):
            mem, nm, rec, nr, sp, sn = _step(
                c, us[t], dns[t], mem, nm, rec, nr, ys[t], ms[t], nms[t], None, None, recs[t], nrecs[t]
            )
            if keep_spikes:
                SP[t] = sp
                SN[t] = sn

        ctx.cfg = cfg
        ctx.save_for_backward(Y, M, NM, REC, NREC, SP, SN, mem0, nm0, rec0, nr0, beta, nbeta, gamma, ngamma, thr,
                              nthr, bias, kp, kn, w, nw)  # fmt: skip
        give_back_when_dead(ctx, (M, NM, REC, NREC, SP, SN))
        # Final states must own their memory: under D without ternary spikes the last ``nm`` is a view of the
        # pooled NM buffer, which a later call would overwrite once this graph is freed.
        fresh_nm = nm is not nm0 and NM is None
        finals = [mem if mem is not mem0 else mem.clone()] + ([nm if fresh_nm else nm.clone()] if dual else [])
        if rec_on:
            finals.append(rec.clone())
        if dual_rec:
            finals.append(nr.clone())
        return (Y, *finals)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gY, *g_finals):
        if ctx.plan is not None:
            return _native_backward(ctx, gY, g_finals[0], g_finals[1] if len(g_finals) > 1 else None)
        cfg: _Cfg = ctx.cfg
        (Y, M, NM, REC, NREC, SP, SN, mem0, nm0, rec0, nr0, beta, nbeta, gamma, ngamma, thr, nthr, bias, kp,
         kn, w, nw) = ctx.saved_tensors  # fmt: skip
        c = _Consts(cfg, beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw)
        dual, rec_on, dual_rec, tern, ts = c.dual, c.rec_on, c.dual_rec, c.tern, c.ts
        (n_u, n_dn, n_mem0, n_nm0, n_rec0, n_nr0, n_beta, n_nbeta, n_gamma, n_ngamma, n_thr, n_nthr, n_bias, n_kp,
         n_kn, n_w, n_nw) = ctx.needs_input_grad[1:]  # fmt: skip
        T = M.shape[0]
        stochastic = cfg.mode == "stochastic"
        sigmoid_fast = cfg.surrogate == "sigmoid"
        k = cfg.slope
        neg_thr_e_k = -(c.thr_e * k) if sigmoid_fast else None
        nthr_e_k = c.neg_nthr_e * k if sigmoid_fast and tern else None
        detach_reset = cfg.detach_reset

        def zeros() -> Tensor:
            return torch.zeros_like(M[0])

        gi = iter(g_finals)

        def first_adjoint(present: bool) -> Tensor | None:
            if not present:
                return None
            g = next(gi)
            return zeros() if g is None else g.clone()

        g_mem, g_nm, g_rec, g_nr = (
            first_adjoint(True),
            first_adjoint(dual),
            first_adjoint(rec_on),
            first_adjoint(dual_rec),
        )

        gU = torch.empty_like(M)
        gDN = torch.empty_like(M) if dual else None
        acc_beta = zeros() if n_beta else None
        acc_nbeta = zeros() if n_nbeta else None
        acc_gamma = zeros() if n_gamma else None
        acc_ngamma = zeros() if n_ngamma else None
        acc_vp = zeros() if (n_thr or n_bias) else None
        acc_vn = zeros() if tern and (n_nthr or n_bias) else None
        acc_rp = zeros() if n_thr else None
        acc_rn = zeros() if tern and n_nthr else None
        acc_kp = zeros() if n_kp else None
        acc_kn = zeros() if n_kn else None
        acc_w = zeros() if n_w else None
        acc_nw = zeros() if n_nw else None

        ys, ms, gys, gus = Y.unbind(0), M.unbind(0), gY.unbind(0), gU.unbind(0)
        nms = NM.unbind(0) if dual else None
        gdns = gDN.unbind(0) if dual else None
        recs = REC.unbind(0) if rec_on else None
        nrecs = NREC.unbind(0) if dual_rec else None
        # Non-dual binary types reset by sp alone, so mem_{t-1} = M[t-1] - thr * sp_{t-1} and the membrane
        # adjoint is beta * g_pre_{t+1}: the beta gradient and the threshold's reset term then follow from two
        # running sums, S1 = sum g_pre_t sp_{t-1} and S2 = sum g_pre_t M[t-1] (one kernel per step fewer).
        fold = not dual and not tern
        g_final = g_mem.clone() if fold and n_thr else None
        s1 = zeros() if fold and (n_beta or n_thr) else None
        s2 = zeros() if fold and n_beta else None
        need_prev_mem = (n_beta or n_nbeta) and not fold

        def spikes_at(t: int) -> tuple[Tensor, Tensor, Tensor | None]:
            """(membrane, positive spikes, negative spike magnitudes) of step t, from the saved membrane."""
            m = ms[t] + nms[t] if dual else ms[t]
            if not tern:
                return m, ys[t], None  # binary spikes are the outputs themselves
            if stochastic:
                return m, SP[t], SN[t]
            return m, _fire_pos(m, c.thr_e, cfg), _fire_neg(m, c.neg_nthr_e, cfg)

        def post_reset(t: int, sp: Tensor, sn: Tensor | None) -> tuple[Tensor, Tensor | None]:
            """The state after step t's reset, as the forward computed it."""
            mem = torch.addcmul(ms[t], sp, c.neg_thr)
            if dual:
                return mem, torch.addcmul(nms[t], sn, nthr) if tern else nms[t]
            if tern:
                mem.addcmul_(sn, nthr)
            return mem, None

        cur = spikes_at(T - 1)
        for t in range(T - 1, -1, -1):
            m, sp, sn = cur
            if t > 0:
                cur = spikes_at(t - 1)
                mem_prev = nm_prev = None
                if need_prev_mem:
                    mem_prev, nm_prev = post_reset(t - 1, cur[1], cur[2])
                rec_prev = recs[t - 1] if rec_on else None
                nr_prev = nrecs[t - 1] if dual_rec else None
            else:
                mem_prev, nm_prev, rec_prev, nr_prev = mem0, nm0, rec0, nr0

            # recurrent trace: rec_t = g rec_{t-1} + (1 - g) o_t
            g_out = None
            if rec_on:
                out = sp - sn if tern else sp
                if dual_rec:
                    o_pos, o_neg = out.clamp(min=0), out.clamp(max=0)
                    if n_gamma:
                        acc_gamma.addcmul_(g_rec, rec_prev - o_pos)
                    if n_ngamma:
                        acc_ngamma.addcmul_(g_nr, nr_prev - o_neg)
                    g_out = (c.one_m_g * g_rec) * (out >= 0) + (c.one_m_ng * g_nr) * (out <= 0)
                    g_rec = gamma * g_rec
                    g_nr = ngamma * g_nr
                else:
                    if n_gamma:
                        acc_gamma.addcmul_(g_rec, rec_prev - out)
                    g_out = c.one_m_g * g_rec
                    g_rec = gamma * g_rec
            # outputs: y = out (B, T) or kp sp - kn sn (TS); out = sp - sn
            gy = gys[t]
            if ts:
                if n_kp:
                    acc_kp.addcmul_(gy, sp)
                if n_kn:
                    acc_kn.addcmul_(gy, sn, value=-1.0)
                g_sp = kp * gy
                g_sn = -(kn * gy)
                if g_out is not None:
                    g_sp = g_sp + g_out
                    g_sn = g_sn - g_out
            else:
                g_sp = gy if g_out is None else gy + g_out
                g_sn = -g_sp if tern else None
            # reset: mem_t = m - sp thr (+ sn nthr); under D each sign on its own branch
            g_state_neg = g_nm if dual else g_mem
            if n_thr and not fold:
                acc_rp.addcmul_(sp, g_mem)
            if not detach_reset:
                g_sp = torch.addcmul(g_sp, g_mem, c.neg_thr)
            if tern:
                if n_nthr:
                    acc_rn.addcmul_(sn, g_state_neg)
                if not detach_reset:
                    g_sn = torch.addcmul(g_sn, g_state_neg, nthr)
            # fire: sp = f(m - thr_e); the sigmoid surrogate's slope k rides on scalar alphas
            if sigmoid_fast:
                sb = _sigmoid_backward(g_sp, torch.sigmoid(torch.add(neg_thr_e_k, m, alpha=k)))
                alpha = k
            else:
                sb = g_sp * surrogate_grad(m - c.thr_e, cfg.surrogate, cfg.slope)
                alpha = 1.0
            if acc_vp is not None:
                acc_vp.add_(sb, alpha=alpha)
            if tern:
                if sigmoid_fast:
                    sbn = _sigmoid_backward(g_sn, torch.sigmoid(torch.sub(nthr_e_k, m, alpha=k)))
                else:
                    sbn = g_sn * surrogate_grad(c.neg_nthr_e - m, cfg.surrogate, cfg.slope)
                if acc_vn is not None:
                    acc_vn.add_(sbn, alpha=alpha)
            # membrane: pre = beta * prev + drive; the drive's gradient is g_pre itself
            g_pre = torch.add(g_mem, sb, alpha=alpha, out=gus[t])
            if tern:
                g_pre.sub_(sbn, alpha=alpha)
            if fold:
                if t > 0:
                    if s1 is not None:
                        s1.addcmul_(g_pre, ys[t - 1])
                    if s2 is not None:
                        s2.addcmul_(g_pre, ms[t - 1])
                elif n_beta:
                    acc_beta.addcmul_(g_pre, mem0)
            elif n_beta:
                acc_beta.addcmul_(g_pre, mem_prev)
            g_mem = beta * g_pre
            if dual:
                g_npre = torch.add(g_state_neg, sb, alpha=alpha, out=gdns[t])
                if tern:
                    g_npre.sub_(sbn, alpha=alpha)
                if n_nbeta:
                    acc_nbeta.addcmul_(g_npre, nm_prev)
                g_nm = nbeta * g_npre
            # drive: I = u + w * rec_{t-1}
            if rec_on:
                if dual_rec:
                    r = rec_prev + nr_prev
                    if n_w:
                        acc_w.addcmul_(g_pre, r.clamp(min=0))
                    if n_nw:
                        acc_nw.addcmul_(g_npre, r.clamp(max=0))
                    g_r = (w * g_pre) * (r >= 0) + (nw * g_npre) * (r <= 0)
                    g_rec = g_rec + g_r
                    g_nr = g_nr + g_r
                else:
                    if n_w:
                        acc_w.addcmul_(g_pre, rec_prev)
                    g_rec = torch.addcmul(g_rec, w, g_pre)

        def red(a: Tensor | None, like: Tensor | None) -> Tensor | None:
            return None if a is None or like is None else a.sum_to_size(like.shape)

        if fold:
            if n_beta:
                acc_beta.add_(s2).addcmul_(s1, thr, value=-1.0)
            if n_thr:
                acc_rp = torch.addcmul(beta * s1, ys[T - 1], g_final)
        g_thr = red(acc_vp + acc_rp, thr).neg_() if n_thr else None
        g_nthr = red(acc_rn - acc_vn, nthr) if n_nthr else None
        g_bias = None
        if n_bias:
            g_bias = red(acc_vp - acc_vn if tern else acc_vp, bias)
        return (
            None,
            gU if n_u else None,
            gDN if n_dn else None,
            red(g_mem, mem0) if n_mem0 else None,
            red(g_nm, nm0) if n_nm0 else None,
            red(g_rec, rec0) if n_rec0 else None,
            red(g_nr, nr0) if n_nr0 else None,
            red(acc_beta, beta),
            red(acc_nbeta, nbeta),
            red(acc_gamma, gamma),
            red(acc_ngamma, ngamma),
            g_thr,
            g_nthr,
            g_bias,
            red(acc_kp, kp),
            red(acc_kn, kn),
            red(acc_w, w),
            red(acc_nw, nw),
        )


def _native_forward(
    ctx, cfg: _Cfg, need: bool, u: Tensor, mem0: Tensor, rec0: Tensor | None, p: dict, kernels=native
) -> tuple:
    """``_FiringCore.forward`` through a whole-sequence kernel (``kernels``: :mod:`tracetorch.ops.native`, or
    :mod:`tracetorch.ops.triton_fire` on CUDA): one pass; saves the pre-reset membranes (the backward recomputes
    the spikes from them) and, for R types, the recurrent traces."""
    spec = cfg.spec
    u = u.contiguous()
    mem0 = mem0.contiguous()
    rec0 = rec0.contiguous() if spec.recurrent else None
    step_shape = tuple(u.shape[1:])
    plan = _native_plan(step_shape, **p)
    Y = native.empty_like_huge(u) if u.device.type == "cpu" else torch.empty_like(u)
    M = take(u) if need else None
    R = take(u) if need and spec.recurrent else None
    memT = torch.empty_like(mem0)
    recT = torch.empty_like(rec0) if spec.recurrent else None
    kernels.fire_forward(_variant(spec), u.shape[0], plan.layout, plan.params, u, mem0, rec0, Y, M, R, memT, recT)
    ctx.cfg, ctx.plan, ctx.kernels = cfg, plan, kernels
    ctx.save_for_backward(M, R, mem0, rec0, *(p[k] for k in _P_ORDER))
    give_back_when_dead(ctx, (M, R))
    return (Y, memT, recT) if spec.recurrent else (Y, memT)


# the effective parameters of _FiringCore's inputs that the native kernels take, with their input positions
_P_INPUT = {"beta": 7, "gamma": 9, "thr": 11, "nthr": 12, "bias": 13, "kp": 14, "kn": 15, "w": 16}
_P_ORDER = tuple(_P_INPUT)  # the order they are saved in


def _native_backward(ctx, gY: Tensor | None, g_memT: Tensor | None, g_recT: Tensor | None) -> tuple:
    cfg: _Cfg = ctx.cfg
    spec = cfg.spec
    plan: _NativePlan = ctx.plan
    M, R, mem0, rec0, *ps = ctx.saved_tensors
    p = dict(zip(_P_ORDER, ps, strict=True))
    needs = ctx.needs_input_grad
    want = {k: needs[i] and p[k] is not None for k, i in _P_INPUT.items()}
    step_shape = tuple(M.shape[1:])
    P = plan.layout[1]
    tern = spec.ternary
    slots = {  # accumulators each wanted gradient needs (ACC_SLOTS names)
        "beta": want["beta"],
        "vp": want["thr"] or want["bias"],
        "rp": want["thr"],
        "vn": tern and (want["nthr"] or want["bias"]),
        "rn": tern and want["nthr"],
        "kp": want["kp"],
        "kn": want["kn"],
        "gamma": want["gamma"],
        "w": want["w"],
    }
    dev = M.device
    accs = {k: torch.zeros(P, dtype=M.dtype, device=dev) for k, on in slots.items() if on}
    gY = torch.zeros_like(M) if gY is None else gY.contiguous()
    g_memT = None if g_memT is None else g_memT.contiguous()
    g_recT = None if g_recT is None else g_recT.contiguous()
    gU = (native.empty_like_huge(M) if dev.type == "cpu" else torch.empty_like(M)) if needs[1] else None
    g_mem0 = torch.empty(step_shape, dtype=M.dtype, device=dev)
    g_rec0 = torch.empty(step_shape, dtype=M.dtype, device=dev) if spec.recurrent else None
    ctx.kernels.fire_backward(
        _variant(spec), plan.layout, plan.params, cfg.slope, cfg.surrogate, cfg.detach_reset, gY, M, R, mem0, rec0,
        g_memT, g_recT, gU, g_mem0, g_rec0, accs,
    )  # fmt: skip

    def back(acc: Tensor, name: str) -> Tensor:
        return _from_flat(acc, plan, step_shape, p[name])

    grads: list[Tensor | None] = [None] * 18
    grads[1] = gU
    grads[3] = g_mem0.sum_to_size(mem0.shape) if needs[3] else None
    if spec.recurrent and needs[5]:
        grads[5] = g_rec0.sum_to_size(rec0.shape)
    if want["beta"]:
        grads[7] = back(accs["beta"], "beta")
    if want["gamma"]:
        grads[9] = back(accs["gamma"], "gamma")
    if want["thr"]:
        grads[11] = back(accs["vp"] + accs["rp"], "thr").neg_()
    if want["nthr"]:
        grads[12] = back(accs["rn"] - accs["vn"], "nthr")
    if want["bias"]:
        grads[13] = back(accs["vp"] - accs["vn"] if tern else accs["vp"], "bias")
    if want["kp"]:
        grads[14] = back(accs["kp"], "kp")
    if want["kn"]:
        grads[15] = back(accs["kn"], "kn")
    if want["w"]:
        grads[16] = back(accs["w"], "w")
    return tuple(grads)


def fused_firing_sequence(
    spec: NeuronSpec,
    u: Tensor,
    state: dict[str, Tensor],
    p: dict[str, Tensor],
    spike_fn: SpikeFunction,
    detach_reset: bool,
    new: dict[str, Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run the firing core of a type over its drive ``u`` ``[T, ...]`` (the synaptic stage, if any, already
    applied); fills ``new`` with the final membrane and recurrent states and returns ``(y, new)``."""
    cfg = _Cfg(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, bool(detach_reset), torch.is_grad_enabled())
    dn = None
    if spec.dual:
        u, dn = u.clamp(min=0), u.clamp(max=0)

    g = p.get
    if spec.family == "B":
        thr, nthr = p["threshold"], None
    else:
        thr, nthr = p["pos_threshold"], p["neg_threshold"]
    if spec.dual_rec:
        gamma, ngamma, w, nw = g("pos_gamma"), g("neg_gamma"), g("pos_rec_weight"), g("neg_rec_weight")
    else:
        gamma, ngamma, w, nw = g("gamma"), None, g("rec_weight"), None
    if spec.dual:
        beta, nbeta, mem0, nm0 = p["pos_beta"], p["neg_beta"], state["pos_mem"], state["neg_mem"]
    else:
        beta, nbeta, mem0, nm0 = p["beta"], None, state["mem"], None
    if spec.dual_rec:
        rec0, nr0 = state["pos_rec"], state["neg_rec"]
    else:
        rec0, nr0 = state.get("rec"), None

    y, *finals = _FiringCore.apply(
        cfg, u, dn, mem0, nm0, rec0, nr0, beta, nbeta, gamma, ngamma, thr, nthr, p["bias"],
        g("pos_scale"), g("neg_scale"), w, nw,
    )  # fmt: skip
    fi = iter(finals)
    if spec.dual:
        new["pos_mem"], new["neg_mem"] = next(fi), next(fi)
    else:
        new["mem"] = next(fi)
    if spec.recurrent:
        if spec.dual_rec:
            new["pos_rec"], new["neg_rec"] = next(fi), next(fi)
        else:
            new["rec"] = next(fi)
    return y, new


def stream_step(layer: Any, x: Tensor) -> Tensor | None:
    """One no-grad streaming step of a spiking layer with minimal kernels, or ``None`` to use the reference.

    Parameters are activated once and cached while their raw tensors are unchanged (version counters).
    Outputs are always fresh tensors; the membrane of non-dual firing types is updated in place when it has
    no autograd history (so a reference kept from ``get_states()`` follows the stream; ``save_states()``
    copies). Written for low Python overhead: it runs once per time step.
    """
    d = layer.__dict__
    spec: NeuronSpec = layer.spec
    states = d["_states"]
    shape = x.shape
    for v in states.values():
        if v is None or v.shape != shape or v.device != x.device or v.dtype is not x.dtype:
            layer.check_input(shape)  # first step of a stream, or an error with a clear message
            states.update(layer.prepare_states(shape, x.dtype, x.device))
            break
    c, p = _cached_consts(layer, d, x)
    if p is None:
        return None
    u = x
    if spec.synaptic:
        if spec.dual:
            ps = torch.addcmul(p["om_pos_alpha"] * x.clamp(min=0), p["pos_alpha"], states["pos_syn"])
            ns = torch.addcmul(p["om_neg_alpha"] * x.clamp(max=0), p["neg_alpha"], states["neg_syn"])
            states["pos_syn"], states["neg_syn"] = ps, ns
            u = ps + ns
        else:
            u = states["syn"] = torch.addcmul(p["om_alpha"] * x, p["alpha"], states["syn"])
    if c is None:  # LI family: membrane only
        if spec.dual:
            pm = _li_membrane(u.clamp(min=0), p, "pos_beta", states["pos_mem"], spec.ema)
            nm = _li_membrane(u.clamp(max=0), p, "neg_beta", states["neg_mem"], spec.ema)
            states["pos_mem"], states["neg_mem"] = pm, nm
            return pm + nm
        mem = states["mem"] = _li_membrane(u, p, "beta", states["mem"], spec.ema)
        return mem.clone()  # the output is the membrane's value, never the state itself
    if spec.dual:
        mem, nm, rec, nr, sp, sn = _step(
            c, u.clamp(min=0), u.clamp(max=0), states["pos_mem"], states["neg_mem"],
            states.get("pos_rec" if spec.dual_rec else "rec"), states.get("neg_rec"),
            None, None, None, None, None, None, None,
        )  # fmt: skip
        states["pos_mem"], states["neg_mem"] = mem, nm
    else:
        old = states["mem"]
        # The membrane of a firing type is never handed out (the output is the spikes), so it is updated in place
        # when nothing can observe the change: no autograd history, a dense buffer of the result's dtype. That
        # leaves one allocation per step (the spikes), which matters: a fresh [32, 1024] float32 tensor is exactly
        # glibc's mmap threshold and can page-fault on every step.
        # (an inference tensor is written in place only under inference mode; PyTorch refuses it elsewhere)
        buf = (
            old
            if not old.requires_grad
            and old.is_contiguous()
            and old.dtype == u.dtype
            and (not old.is_inference() or torch.is_inference_mode_enabled())
            else None
        )
        plan, nplan = d["_stream_cache"][3:5]
        if plan is not None and buf is not None and u.is_contiguous():
            y = torch.empty_like(u)
            native.lif_step(plan, u, buf, y)
            return y
        if nplan is not None and buf is not None and u.is_contiguous():
            # the other single-branch types: the sequence kernel for one step, states updated in place
            rec = states.get("rec")
            if not spec.recurrent or (not rec.requires_grad and rec.is_contiguous() and rec.dtype == u.dtype):
                y = torch.empty_like(u)
                native.fire_step(nplan, u, buf, rec, y)
                return y
        mem, nm, rec, nr, sp, sn = _step(
            c, u, None, old, None, states.get("rec"), None, None, buf, None, buf, None, None, None
        )
        states["mem"] = mem
    if spec.recurrent:
        if spec.dual_rec:
            states["pos_rec"], states["neg_rec"] = rec, nr
        else:
            states["rec"] = rec
    if spec.family == "B":
        return sp
    return sp - sn if spec.family == "T" else c.kp * sp - c.kn * sn


def fast_native_step(d: dict, fast: list, x: Tensor) -> Tensor | None:
    """The native streaming step of LIB with every check the general path makes, in as few Python operations
    as possible (this is most of the cost of a step); ``None`` when anything differs from the cached stream
    (then the general path runs and refreshes the cache). ``fast``: plan, step shape, dtype, the raw parameters'
    (container, name, version, address), spike function, folded constants, and the membrane tensor last
    checked with its version (the kernel writes it in place without a version bump, so while the same tensor
    keeps its version nothing has touched its shape, dtype, device or layout; an inference tensor, which has no
    version counter, is checked at every step)."""
    plan, shape, dtype, stamp, spike_fn, folded, seen, seen_version = fast
    if d.get("_spike") is not spike_fn or d["_folded"] is not folded:
        return None
    mem = d["_states"].get("mem")
    if mem is None:
        return None
    if mem is not seen or seen_version is None or mem._version != seen_version:
        # a new membrane, one changed in place, or one made under inference mode (no version counter: checked
        # at every step)
        if mem.shape != shape or mem.dtype is not dtype or not mem.is_cpu or not mem.is_contiguous():
            return None
        fast[6], fast[7] = mem, None if mem.is_inference() else mem._version
    if mem.requires_grad or x.shape != shape or x.dtype is not dtype or not x.is_cpu or not x.is_contiguous():
        return None
    for container, name, version, ptr in stamp:
        r = container.get(name)
        if r is None or r._version != version or r.data_ptr() != ptr:
            return None
    y = torch.empty_like(x)
    plan.fn(plan.addr, x.data_ptr(), mem.data_ptr(), y.data_ptr())
    return y


def _li_membrane(drive: Tensor, p: dict[str, Tensor], name: str, mem: Tensor, is_ema: bool) -> Tensor:
    if is_ema:
        return torch.addcmul(p[f"om_{name}"] * drive, p[name], mem)
    return torch.addcmul(drive, p[name], mem)


def _cached_consts(layer: Any, d: dict, x: Tensor) -> tuple[_Consts | None, dict[str, Tensor] | None]:
    """``(consts or None for the LI family, effective params)`` for streaming; ``(None, None)`` if the
    reference must run (a custom spike callable, mixed dtypes or devices)."""
    params, buffers = d["_parameters"], d["_buffers"]
    raws = [params.get(k) if k in params else buffers[k] for k in d["_raw_names"]]
    spike_fn = d.get("_spike")
    # version counters catch in-place updates (optimiser steps, load_state_dict); data pointers catch a new
    # storage behind the same Parameter (``.data =``, ``.to()``)
    key = (x.shape, x.dtype, x.device, id(spike_fn), len(d["_folded"]), *[(r._version, r.data_ptr()) for r in raws])
    cache = d.get("_stream_cache")
    if cache is not None and cache[0] == key:
        return cache[1], cache[2]
    spec = layer.spec
    if (spec.fires and not isinstance(spike_fn, SpikeFunction)) or any(
        r.dtype != x.dtype or r.device != x.device for r in raws
    ):
        return None, None
    with normal_tensors():  # the cache outlives an inference_mode block: no inference tensors in it
        return _fill_stream_cache(layer, d, x, key, raws, spike_fn)


def _fill_stream_cache(layer: Any, d: dict, x: Tensor, key: tuple, raws: list, spike_fn: Any) -> tuple:
    params, buffers, spec = d["_parameters"], d["_buffers"], layer.spec
    p = dict(layer.params(x.ndim))
    plan = nplan = None
    for name in ("alpha", "pos_alpha", "neg_alpha", "beta", "pos_beta", "neg_beta"):
        if name in p:
            p[f"om_{name}"] = 1 - p[name]
    c = None
    if spec.fires:
        g = p.get
        cfg = _Cfg(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, layer.detach_reset)
        beta, nbeta = (p["pos_beta"], p["neg_beta"]) if spec.dual else (p["beta"], None)
        if spec.dual_rec:
            gamma, ngamma, w, nw = p["pos_gamma"], p["neg_gamma"], p["pos_rec_weight"], p["neg_rec_weight"]
        else:
            gamma, ngamma, w, nw = g("gamma"), None, g("rec_weight"), None
        thr, nthr = (p["threshold"], None) if spec.family == "B" else (p["pos_threshold"], p["neg_threshold"])
        c = _Consts(cfg, beta, nbeta, gamma, ngamma, thr, nthr, p["bias"], g("pos_scale"), g("neg_scale"), w, nw)
        if not spec.dual and _native_ok(cfg, x):
            raw = {
                "beta": beta,
                "thr": thr,
                "nthr": nthr,
                "bias": p["bias"],
                "kp": g("pos_scale"),
                "kn": g("neg_scale"),
            }
            n = _native_plan(tuple(x.shape), **raw, gamma=gamma, w=w)
            if spec.family == "B" and not spec.recurrent:
                plan = native.StepPlan(n.layout, n.params["beta"], n.params["thr_e"], n.params["neg_thr"])
            else:
                nplan = native.FireStep(_variant(spec), n.layout, n.params)
    d["_stream_cache"] = (key, c, p, plan, nplan)
    d["_stream_fast"] = None
    if plan is not None and not spec.synaptic:
        conts = [params if k in params else buffers for k in d["_raw_names"]]
        stamp = [(c, k, r._version, r.data_ptr()) for c, k, r in zip(conts, d["_raw_names"], raws, strict=True)]
        d["_stream_fast"] = [plan, x.shape, x.dtype, stamp, spike_fn, d["_folded"], None, -1]
    return c, p
