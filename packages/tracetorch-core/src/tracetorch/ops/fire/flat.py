"""The autograd glue of the flat firing kernels (:mod:`.native` C on the CPU, :mod:`.triton` on CUDA): both see a
step's elements as ``[O, P, J]`` with the parameters as P-long vectors (:func:`.native.param_layout`), take the
same parameter packs (:data:`.native.PARAM_SLOTS`) and tensors by the same slot names (:data:`.native.FWD_IO`,
:data:`.native.BWD_IO`) and return the same saved tensors, so one forward and one backward serve both.

Under D the kernels take the whole drive ``u`` and split it by sign themselves (the torch kernel takes the two
halves), so the gradient they return for ``u`` includes the split's."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...functional.spiking import NeuronSpec
from ..workspace import give_back_when_dead, take
from . import native
from .records import FLAT_PARAMS, FireParams, FireStates

__all__ = [
    "FlatPlan",
    "flat_backward",
    "flat_forward",
    "flat_gradients",
    "flat_pass",
    "flat_plan",
    "from_flat",
    "variant_of",
]


def variant_of(spec: NeuronSpec) -> str:
    """The kernel variant of a firing type (:data:`.native.VARIANTS`): ``DSRLITS`` -> ``dtsr``."""
    return "d" * spec.dual + {"B": "b", "T": "t", "TS": "ts"}[spec.family] + "r" * spec.recurrent


class FlatPlan(NamedTuple):
    """Parameters flattened for the native kernels (:func:`.native.param_layout`), by the names
    of :data:`.native.PARAM_SLOTS`."""

    layout: tuple[int, int, int]
    index: tuple[slice, ...]
    params: dict[str, Tensor]


def flat_plan(step_shape: tuple[int, ...], **raw: Tensor | None) -> FlatPlan:
    """From the effective parameters (:data:`.records.FLAT_PARAMS` names: ``beta, thr, bias`` and where the type has
    them ``nbeta, gamma, ngamma, nthr, kp, kn, w, nw``), the derived ones the kernels read, each computed as the
    torch kernels compute it."""
    given = {k: v for k, v in raw.items() if v is not None}
    *layout, index = native.param_layout(step_shape, list(given.values()))
    f = {k: native.flat_param(v, step_shape, index) for k, v in given.items()}
    params = {"beta": f["beta"], "thr_e": f["thr"] - f["bias"], "neg_thr": -f["thr"]}
    if "nbeta" in f:
        params["nbeta"] = f["nbeta"]
    if "nthr" in f:
        params |= {"nthr": f["nthr"], "nnthr_e": -(f["nthr"] + f["bias"])}
    if "kp" in f:
        params |= {"kp": f["kp"], "kn": f["kn"]}
    if "gamma" in f:
        params |= {"gamma": f["gamma"], "one_m_gamma": 1 - f["gamma"], "w": f["w"]}
    if "ngamma" in f:
        params |= {"ngamma": f["ngamma"], "one_m_ngamma": 1 - f["ngamma"], "nw": f["nw"]}
    return FlatPlan(tuple(layout), index, params)


def from_flat(acc: Tensor, index: tuple[slice, ...], step_shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A P-long gradient accumulator back in the shape of the parameter ``like`` (``index``: the layout's cut,
    :func:`.native.param_layout`)."""
    block = [step_shape[d] if s == slice(None) else 1 for d, s in enumerate(index)]
    return acc.reshape(block).sum_to_size(like.shape)


# the final states by FireStates field, with their FWD_IO names (initial, final), saved names and BWD_IO gradients
_STATE_IO = {
    "mem": ("mem0", "memT", "M", "gmemT", "gmem0"),
    "nm": ("nmem0", "nmemT", "NM", "gnmemT", "gnmem0"),
    "rec": ("rec0", "recT", "R", "grecT", "grec0"),
    "nr": ("nrec0", "nrecT", "NR", "gnrecT", "gnrec0"),
}


def flat_pass(
    spec: NeuronSpec, u: Tensor, s0: FireStates, p: FireParams, kernels, save: bool, alloc=take
) -> tuple[FlatPlan, Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """One forward pass of a flat kernel: ``(plan, y, finals, saved)``; ``finals`` by :class:`FireStates` field
    (the ones the type has), ``saved`` the pre-reset membranes and traces by :data:`.native.FWD_IO` name (``M``,
    ``NM``, ``R``, ``NR``; empty unless ``save``), allocated by ``alloc(like)``."""
    u = u.contiguous()
    step_shape = tuple(u.shape[1:])
    plan = flat_plan(step_shape, **{k: getattr(p, k) for k in FLAT_PARAMS})
    cpu = u.device.type == "cpu"
    Y = native.empty_like_huge(u) if cpu else torch.empty_like(u)
    io: dict[str, Tensor] = {"u": u, "Y": Y}
    finals, saved = {}, {}
    for field, (init, final, keep, _, _) in _STATE_IO.items():
        s = getattr(s0, field)
        if s is None:
            continue
        io[init] = s.contiguous()
        io[final] = finals[field] = torch.empty_like(io[init])
        if save:
            io[keep] = saved[keep] = alloc(u)
    kernels.fire_forward(variant_of(spec), u.shape[0], plan.layout, plan.params, io)
    return plan, Y, finals, saved


def flat_forward(ctx, cfg, need: bool, u: Tensor, s0: FireStates, p: FireParams, kernels=native) -> tuple:
    """``FiringCore.forward`` through a whole-sequence kernel (``kernels``: :mod:`.native`, or :mod:`.triton` on
    CUDA): one pass; saves the pre-reset membranes (the backward recomputes the spikes from them), for R types the
    recurrent traces, and under D the drive. Returns ``(y, *finals)`` in :class:`FireStates` order."""
    spec = cfg.spec
    plan, Y, finals, saved = flat_pass(spec, u, s0, p, kernels, need)
    ctx.cfg, ctx.plan, ctx.kernels = cfg, plan, kernels
    ctx.fields = tuple(finals)
    g = saved.get
    keep_u = u if need and spec.dual else None
    ctx.save_for_backward(keep_u, g("M"), g("NM"), g("R"), g("NR"), *s0, *(getattr(p, k) for k in _P_ORDER))
    give_back_when_dead(ctx, tuple(saved.values()))
    return (Y, *finals.values())


# the effective parameters of FiringCore's inputs that the flat kernels take, with their input positions
# (FiringCore.apply(cfg, u, dn, *FireStates, *FireParams): the states start at position 3, the parameters at 7)
_P_INPUT = {k: 7 + FireParams._fields.index(k) for k in FLAT_PARAMS}
_P_ORDER = tuple(_P_INPUT)  # the order they are saved in
_S_INPUT = {k: 3 + i for i, k in enumerate(FireStates._fields)}


def flat_backward(ctx, gY: Tensor | None, *g_finals: Tensor | None) -> tuple:
    """``FiringCore.backward`` through the flat kernels: the gradients of :func:`flat_gradients` at
    ``FiringCore``'s input positions."""
    u, M, NM, R, NR, *rest = ctx.saved_tensors
    s0 = FireStates(*rest[:4])
    p = dict(zip(_P_ORDER, rest[4:], strict=True))
    needs = ctx.needs_input_grad
    want = {k: needs[i] and p[k] is not None for k, i in _P_INPUT.items()}
    want |= {f: needs[i] and getattr(s0, f) is not None for f, i in _S_INPUT.items()}
    want["u"] = needs[1]
    saved = {"u": u, "M": M, "NM": NM, "R": R, "NR": NR}
    g_states = dict(zip(ctx.fields, g_finals, strict=True))
    g = flat_gradients(ctx.cfg, ctx.plan, ctx.kernels, saved, s0, p, want, gY, g_states)
    grads: list[Tensor | None] = [None] * 18
    for name, i in (("u", 1), *_S_INPUT.items(), *_P_INPUT.items()):
        grads[i] = g.get(name)
    return tuple(grads)


def flat_gradients(
    cfg, plan: FlatPlan, kernels, saved: dict[str, Tensor | None], s0: FireStates, p: dict[str, Tensor | None],
    want: dict[str, bool], gY: Tensor | None, g_states: dict[str, Tensor | None],
) -> dict[str, Tensor]:  # fmt: skip
    """The backward of :func:`flat_pass`: from its ``saved`` tensors (and, under D, the drive ``u``), the gradients
    ``want`` asks for by name (``u``, the :class:`FireStates` fields and the :data:`FLAT_PARAMS` in ``p``, the
    effective parameters), shaped like their inputs. ``g_states``: the gradients of the final states by field
    (``None``: zero). ``cfg``: a ``FireConfig`` (spec, slope, surrogate, detach_reset)."""
    spec = cfg.spec
    M = saved["M"]
    step_shape = tuple(M.shape[1:])
    P = plan.layout[1]
    tern = spec.ternary
    w = want.get
    slots = {  # accumulators each wanted gradient needs (ACC_SLOTS names)
        "beta": w("beta"),
        "vp": w("thr") or w("bias"),
        "rp": w("thr"),
        "vn": tern and (w("nthr") or w("bias")),
        "rn": tern and w("nthr"),
        "kp": w("kp"),
        "kn": w("kn"),
        "gamma": w("gamma"),
        "w": w("w"),
        "nbeta": w("nbeta"),
        "ngamma": w("ngamma"),
        "nw": w("nw"),
    }
    dev = M.device
    accs = {k: torch.zeros(P, dtype=M.dtype, device=dev) for k, on in slots.items() if on}
    io: dict[str, Tensor | None] = {k: saved.get(k) for k in ("M", "NM", "R", "NR")}
    io["u"] = saved.get("u") if spec.dual else None
    io["gY"] = torch.zeros_like(M) if gY is None else gY.contiguous()
    if w("u"):
        io["gU"] = native.empty_like_huge(M) if dev.type == "cpu" else torch.empty_like(M)
    for field, (init, _, _, g_final, g_init) in _STATE_IO.items():
        s = getattr(s0, field)
        if s is None:
            continue
        io[init] = s.contiguous()
        g = g_states.get(field)
        io[g_final] = None if g is None else g.contiguous()
        io[g_init] = torch.empty(step_shape, dtype=M.dtype, device=dev)  # the kernels always write it
    kernels.fire_backward(variant_of(spec), plan.layout, plan.params, cfg.slope, cfg.surrogate, cfg.detach_reset,
                          io, accs)  # fmt: skip

    def back(acc: Tensor, name: str) -> Tensor:
        return from_flat(acc, plan.index, step_shape, p[name])

    grads: dict[str, Tensor] = {}
    if w("u"):
        grads["u"] = io["gU"]
    for field, (_, _, _, _, g_init) in _STATE_IO.items():
        if w(field):
            grads[field] = io[g_init].sum_to_size(getattr(s0, field).shape)
    for name in ("beta", "nbeta", "gamma", "ngamma", "kp", "kn", "w", "nw"):
        if w(name):
            grads[name] = back(accs[name], name)
    if w("thr"):
        grads["thr"] = back(accs["vp"] + accs["rp"], "thr").neg_()
    if w("nthr"):
        grads["nthr"] = back(accs["rn"] - accs["vn"], "nthr")
    if w("bias"):
        grads["bias"] = back(accs["vp"] - accs["vn"] if tern else accs["vp"], "bias")
    return grads
