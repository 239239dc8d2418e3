"""The no-grad streaming engine of the spiking layers: one step per call with cached parameters and, where a native
kernel covers the type, one C call per step. Same numbers as the reference step (``functional.neuron_step``); the
layer falls back to it whenever anything here does not apply."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..functional.spike import SpikeFunction
from ..functional.spiking import NeuronSpec
from ..layer import normal_tensors
from ..ops import backend
from ..ops.fire import native, native_ok
from ..ops.fire.flat import flat_plan, variant_of
from ..ops.fire.records import FLAT_PARAMS, FireParams, FireStates
from ..ops.fire.torch_kernel import FireConfig, FireConstants, forward_step
from ..params import stamp

__all__ = ["fast_native_step", "stream_step"]


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
    plan, nplan = d["_stream_cache"][3:5]
    if nplan is not None and u.is_contiguous():
        # every firing type but LIB: its sequence kernel for one step (under D it splits the drive by sign), the
        # states updated in place when nothing can observe it (see below), no two of them sharing memory
        kept = [None if k is None else states[k] for k in FireStates.names(spec)]
        present = [t for t in kept if t is not None]
        if all(_writable(t, u) for t in present) and len({t.data_ptr() for t in present}) == len(present):
            y = torch.empty_like(u)
            mem, nmem, rec, nrec = kept
            native.fire_step(nplan, u, mem, y, rec=rec, nmem=nmem, nrec=nrec)
            return y
    if spec.dual:
        mem, nm, rec, nr, sp, sn = forward_step(
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
        buf = old if _writable(old, u) else None
        if plan is not None and buf is not None and u.is_contiguous():
            y = torch.empty_like(u)
            native.lif_step(plan, u, buf, y)
            return y
        mem, nm, rec, nr, sp, sn = forward_step(
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
    version counter, is checked at every step), and the backend generation it was planned under
    (:data:`tracetorch.ops.backend.GENERATION`: a change of backend replans)."""
    plan, shape, dtype, stamp, spike_fn, folded, seen, seen_version, generation = fast
    if d.get("_spike") is not spike_fn or d["_folded"] is not folded or generation != backend.GENERATION:
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


def _writable(state: Tensor, like: Tensor) -> bool:
    """Whether a state may be updated in place by a kernel: no autograd history, a dense buffer of the step's dtype
    (an inference tensor only under inference mode; PyTorch refuses it elsewhere)."""
    return (
        not state.requires_grad
        and state.is_contiguous()
        and state.dtype == like.dtype
        and (not state.is_inference() or torch.is_inference_mode_enabled())
    )


def _li_membrane(drive: Tensor, p: dict[str, Tensor], name: str, mem: Tensor, is_ema: bool) -> Tensor:
    if is_ema:
        return torch.addcmul(p[f"om_{name}"] * drive, p[name], mem)
    return torch.addcmul(drive, p[name], mem)


def _cached_consts(layer: Any, d: dict, x: Tensor) -> tuple[FireConstants | None, dict[str, Tensor] | None]:
    """``(consts or None for the LI family, effective params)`` for streaming; ``(None, None)`` if the
    reference must run (a custom spike callable, mixed dtypes or devices)."""
    params, buffers = d["_parameters"], d["_buffers"]
    raws = [params.get(k) if k in params else buffers[k] for k in d["_raw_names"]]
    spike_fn = d.get("_spike")
    key = (x.shape, x.dtype, x.device, id(spike_fn), len(d["_folded"]), backend.GENERATION, *stamp(raws))
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
        cfg = FireConfig(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, layer.detach_reset)
        fp = FireParams.of(spec, p)
        c = FireConstants(cfg, fp)
        if native_ok(cfg, x):
            n = flat_plan(tuple(x.shape), **{k: getattr(fp, k) for k in FLAT_PARAMS})
            if spec.family == "B" and not spec.recurrent and not spec.dual:
                plan = native.StepPlan(n.layout, n.params["beta"], n.params["thr_e"], n.params["neg_thr"])
            else:
                nplan = native.FireStep(variant_of(spec), n.layout, n.params)
    d["_stream_cache"] = (key, c, p, plan, nplan, raws, spike_fn)  # holds what the key stamped
    d["_stream_fast"] = None
    if plan is not None and not spec.synaptic:
        conts = [params if k in params else buffers for k in d["_raw_names"]]
        stamp = [(c, k, r._version, r.data_ptr()) for c, k, r in zip(conts, d["_raw_names"], raws, strict=True)]
        d["_stream_fast"] = [plan, x.shape, x.dtype, stamp, spike_fn, d["_folded"], None, -1, backend.GENERATION]
    return c, p
