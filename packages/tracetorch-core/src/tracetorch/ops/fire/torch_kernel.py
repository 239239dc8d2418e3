"""The torch kernel of the firing op (B, T, TS; any of D, R): one autograd node over a whole sequence.

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
When a flat kernel was chosen (``cfg.kernels``: :mod:`.native` on the CPU, :mod:`.triton` on CUDA),
:class:`FiringCore` runs it through :mod:`.flat`.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ...functional.spike import fire, surrogate_grad
from ...functional.spiking import NeuronSpec
from ..workspace import give_back_when_dead, take
from . import triton
from .flat import flat_backward, flat_forward
from .records import FireParams, FireStates

__all__ = ["FireConfig", "FireConstants", "FiringCore", "forward_step"]


class FireConfig(NamedTuple):
    spec: NeuronSpec
    mode: str
    surrogate: str
    slope: float
    detach_reset: bool
    grad: bool = True  # autograd was on at the call (forward() itself always runs with it off)
    kernels: Any = None  # the flat kernels that run it (a module: native or triton), None: the torch kernel


def _fire_pos(m: Tensor, thr_e: Tensor, cfg: FireConfig, out: Tensor | None = None) -> Tensor:
    """``f(m - thr_e)``, into ``out`` if given. Heaviside: ``m >= thr_e`` is exactly ``m - thr_e >= 0`` for
    finite floats (IEEE subtraction is monotonic and never rounds a nonzero difference to zero)."""
    if cfg.mode == "heaviside":
        return torch.ge(m, thr_e, out=torch.empty_like(m) if out is None else out)
    s = fire(m - thr_e, cfg.mode, cfg.slope)
    return s if out is None else out.copy_(s)


def _fire_neg(m: Tensor, neg_thr_e: Tensor, cfg: FireConfig) -> Tensor:
    """``f(neg_thr_e - m)``, the magnitude of a negative spike."""
    if cfg.mode == "heaviside":
        out = torch.empty_like(m)
        return torch.le(m, neg_thr_e, out=out)
    return fire(neg_thr_e - m, cfg.mode, cfg.slope)


_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # resolved once: torch.ops lookups are slow


class FireConstants:
    """Per-sequence constants derived from the parameters (shared by forward, backward and streaming)."""

    def __init__(self, cfg: FireConfig, p: FireParams) -> None:
        spec = cfg.spec
        beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw = p
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


def forward_step(c: FireConstants, i_pos, i_neg, mem, nm, rec, nr, y, m_pre, nm_pre, mem_out, nm_out, rec_out, nr_out):
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


class FiringCore(torch.autograd.Function):
    """Inputs: drives ``u`` (``dn``: negative drive under D) ``[T, ...]``, then the fields of the initial
    :class:`FireStates` and of the :class:`FireParams` (autograd takes tensors as positional inputs only). Absent
    ones are ``None``. Outputs: ``y [T, ...]`` and the final states."""

    @staticmethod
    def forward(ctx, cfg: FireConfig, u, dn, *states_and_params):
        s0, p = FireStates(*states_and_params[:4]), FireParams(*states_and_params[4:])
        mem0, nm0, rec0, nr0 = s0
        need = cfg.grad and any(ctx.needs_input_grad[1:])
        kernels = cfg.kernels
        if kernels is not None:
            try:
                return flat_forward(ctx, cfg, need, u, s0, p, kernels)
            except Exception as exc:
                if kernels is not triton:
                    raise
                # a Triton kernel that does not compile or launch here: say so once, then the torch kernels run
                triton.disable(f"{type(exc).__name__}: {exc}")
                warnings.warn(f"tracetorch: Triton firing kernels disabled ({exc}); using the torch kernels",
                              RuntimeWarning, stacklevel=2)  # fmt: skip
        ctx.plan = None
        ctx.whole_drive = None
        if cfg.spec.dual and dn is None:  # a D type whose flat kernel was meant to split the drive (it failed)
            ctx.whole_drive = u
            u, dn = u.clamp(min=0), u.clamp(max=0)
        c = FireConstants(cfg, p)
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
            mem, nm, rec, nr, sp, sn = forward_step(
                c, us[t], dns[t], mem, nm, rec, nr, ys[t], ms[t], nms[t], None, None, recs[t], nrecs[t]
            )
            if keep_spikes:
                SP[t] = sp
                SN[t] = sn

        ctx.cfg = cfg
        ctx.save_for_backward(Y, M, NM, REC, NREC, SP, SN, *s0, *p)
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
            return flat_backward(ctx, gY, *g_finals)
        cfg: FireConfig = ctx.cfg
        Y, M, NM, REC, NREC, SP, SN, *rest = ctx.saved_tensors
        mem0, nm0, rec0, nr0 = FireStates(*rest[:4])
        p = FireParams(*rest[4:])
        beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw = p
        c = FireConstants(cfg, p)
        dual, rec_on, dual_rec, tern, ts = c.dual, c.rec_on, c.dual_rec, c.tern, c.ts
        (n_u, n_dn, n_mem0, n_nm0, n_rec0, n_nr0, n_beta, n_nbeta, n_gamma, n_ngamma, n_thr, n_nthr, n_bias, n_kp,
         n_kn, n_w, n_nw) = ctx.needs_input_grad[1:]  # fmt: skip
        whole = ctx.whole_drive  # the drive split here, not by the caller: its gradient takes both halves
        if whole is not None:
            n_dn = n_u
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
        if whole is not None and n_u:  # as autograd would through u.clamp(min=0) and u.clamp(max=0)
            gU = torch.where(whole >= 0, gU, 0) + torch.where(whole <= 0, gDN, 0)
            n_dn = False
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
