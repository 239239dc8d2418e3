"""The autograd glue of the flat firing kernels (:mod:`.native` C on the CPU, :mod:`.triton` on CUDA): both see a
step's elements as ``[O, P, J]`` with the parameters as P-long vectors (:func:`.native.param_layout`), take the
same parameter packs (:data:`.native.PARAM_SLOTS`) and return the same saved tensors, so one forward and one
backward serve both."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...functional.spiking import NeuronSpec
from ..workspace import give_back_when_dead, take
from . import native
from .records import FLAT_PARAMS, FireParams

__all__ = ["FlatPlan", "flat_backward", "flat_forward", "flat_gradients", "flat_plan", "from_flat", "variant_of"]


def variant_of(spec: NeuronSpec) -> str:
    return {"B": "b", "T": "t", "TS": "ts"}[spec.family] + ("r" if spec.recurrent else "")


class FlatPlan(NamedTuple):
    """Parameters flattened for the native kernels (:func:`.native.param_layout`), by the names
    of :data:`.native.PARAM_SLOTS`."""

    layout: tuple[int, int, int]
    index: tuple[slice, ...]
    params: dict[str, Tensor]


def flat_plan(step_shape: tuple[int, ...], **raw: Tensor | None) -> FlatPlan:
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
    return FlatPlan(tuple(layout), index, params)


def from_flat(acc: Tensor, plan: FlatPlan, step_shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A P-long gradient accumulator back in the shape of the parameter ``like``."""
    block = [step_shape[d] if s == slice(None) else 1 for d, s in enumerate(plan.index)]
    return acc.reshape(block).sum_to_size(like.shape)


def flat_forward(
    ctx, cfg, need: bool, u: Tensor, mem0: Tensor, rec0: Tensor | None, p: FireParams, kernels=native
) -> tuple:
    """``FiringCore.forward`` through a whole-sequence kernel (``kernels``: :mod:`.native`, or
    :mod:`.triton` on CUDA): one pass; saves the pre-reset membranes (the backward recomputes
    the spikes from them) and, for R types, the recurrent traces."""
    spec = cfg.spec
    u = u.contiguous()
    mem0 = mem0.contiguous()
    rec0 = rec0.contiguous() if spec.recurrent else None
    step_shape = tuple(u.shape[1:])
    plan = flat_plan(step_shape, **{k: getattr(p, k) for k in FLAT_PARAMS})
    Y = native.empty_like_huge(u) if u.device.type == "cpu" else torch.empty_like(u)
    M = take(u) if need else None
    R = take(u) if need and spec.recurrent else None
    memT = torch.empty_like(mem0)
    recT = torch.empty_like(rec0) if spec.recurrent else None
    kernels.fire_forward(variant_of(spec), u.shape[0], plan.layout, plan.params, u, mem0, rec0, Y, M, R, memT, recT)
    ctx.cfg, ctx.plan, ctx.kernels = cfg, plan, kernels
    ctx.save_for_backward(M, R, mem0, rec0, *(getattr(p, k) for k in _P_ORDER))
    give_back_when_dead(ctx, (M, R))
    return (Y, memT, recT) if spec.recurrent else (Y, memT)


# the effective parameters of FiringCore's inputs that the native kernels take, with their input positions
# (FiringCore.apply(cfg, u, dn, *FireStates, *FireParams): the parameters start at position 7)
_P_INPUT = {k: 7 + FireParams._fields.index(k) for k in FLAT_PARAMS}
_P_ORDER = tuple(_P_INPUT)  # the order they are saved in


def flat_backward(ctx, gY: Tensor | None, g_memT: Tensor | None, g_recT: Tensor | None) -> tuple:
    """``FiringCore.backward`` through the flat kernels: the gradients of :func:`flat_gradients` at
    ``FiringCore``'s input positions."""
    M, R, mem0, rec0, *ps = ctx.saved_tensors
    p = dict(zip(_P_ORDER, ps, strict=True))
    needs = ctx.needs_input_grad
    want = {k: needs[i] and p[k] is not None for k, i in _P_INPUT.items()}
    want |= {"u": needs[1], "mem0": needs[3], "rec0": ctx.cfg.spec.recurrent and needs[5]}
    g = flat_gradients(ctx.cfg, ctx.plan, ctx.kernels, M, R, mem0, rec0, p, want, gY, g_memT, g_recT)
    grads: list[Tensor | None] = [None] * 18
    for name, i in (("u", 1), ("mem0", 3), ("rec0", 5), *_P_INPUT.items()):
        grads[i] = g.get(name)
    return tuple(grads)


def flat_gradients(
    cfg, plan: FlatPlan, kernels, M: Tensor, R: Tensor | None, mem0: Tensor, rec0: Tensor | None,
    p: dict[str, Tensor | None], want: dict[str, bool], gY: Tensor | None, g_memT: Tensor | None,
    g_recT: Tensor | None,
) -> dict[str, Tensor]:  # fmt: skip
    """The backward of :func:`flat_forward`'s pass: from the saved pre-reset membranes ``M`` (and traces ``R``),
    the gradients ``want`` asks for by name (``u``, ``mem0``, ``rec0`` and the :data:`FLAT_PARAMS` in ``p``, the
    effective parameters), shaped like their inputs. ``cfg``: a ``FireConfig`` (spec, slope, surrogate,
    detach_reset)."""
    spec = cfg.spec
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
    gU = (native.empty_like_huge(M) if dev.type == "cpu" else torch.empty_like(M)) if want["u"] else None
    g_mem0 = torch.empty(step_shape, dtype=M.dtype, device=dev)
    g_rec0 = torch.empty(step_shape, dtype=M.dtype, device=dev) if spec.recurrent else None
    kernels.fire_backward(
        variant_of(spec), plan.layout, plan.params, cfg.slope, cfg.surrogate, cfg.detach_reset, gY, M, R, mem0, rec0,
        g_memT, g_recT, gU, g_mem0, g_rec0, accs,
    )  # fmt: skip

    def back(acc: Tensor, name: str) -> Tensor:
        return from_flat(acc, plan, step_shape, p[name])

    grads: dict[str, Tensor] = {}
    if gU is not None:
        grads["u"] = gU
    if want["mem0"]:
        grads["mem0"] = g_mem0.sum_to_size(mem0.shape)
    if spec.recurrent and want["rec0"]:
        grads["rec0"] = g_rec0.sum_to_size(rec0.shape)
    if want["beta"]:
        grads["beta"] = back(accs["beta"], "beta")
    if want["gamma"]:
        grads["gamma"] = back(accs["gamma"], "gamma")
    if want["thr"]:
        grads["thr"] = back(accs["vp"] + accs["rp"], "thr").neg_()
    if want["nthr"]:
        grads["nthr"] = back(accs["rn"] - accs["vn"], "nthr")
    if want["bias"]:
        grads["bias"] = back(accs["vp"] - accs["vn"] if tern else accs["vp"], "bias")
    if want["kp"]:
        grads["kp"] = back(accs["kp"], "kp")
    if want["kn"]:
        grads["kn"] = back(accs["kn"], "kn")
    if want["w"]:
        grads["w"] = back(accs["w"], "w")
    return grads
