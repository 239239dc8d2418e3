"""The native C firing kernels as ``torch.library`` custom ops, so compiled graphs keep them.

``ctypes`` calls are opaque to dynamo: a compiled ``scan`` would break its graph there (``fullgraph=True`` fails).
Registered as ``tracetorch::fire_native`` (forward) and ``tracetorch::fire_native_backward`` with fake
implementations (shapes only) and an autograd formula, they appear in ``torch.compile`` and ``torch.export`` graphs
as single nodes, run the same kernels through :mod:`.flat` and give the same numbers as the eager path
(:class:`.torch_kernel.FiringCore` with the native kernels). Eager calls keep using ``FiringCore``.

Absent optional tensors are passed as ``None`` and returned as empty tensors (custom ops return no ``None``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...functional.spiking import NeuronSpec
from . import native
from .flat import flat_gradients, flat_plan, variant_of
from .records import FLAT_PARAMS, FireParams, FireStates

__all__ = ["fire_native_compiled"]

_INPUTS = ("u", "mem0", "rec0", *FLAT_PARAMS)  # fire_native's tensor inputs, in order


def _or_none(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 and t.ndim == 1 else t


def _nothing(like: Tensor) -> Tensor:
    return like.new_empty(0)


class _Config:
    """What ``flat_gradients`` reads of a ``FireConfig``, rebuilt from the op's plain arguments."""

    def __init__(self, neuron: str, slope: float, surrogate: str, detach_reset: bool) -> None:
        self.spec = NeuronSpec.from_name(neuron)
        self.slope, self.surrogate, self.detach_reset = slope, surrogate, detach_reset


@torch.library.custom_op("tracetorch::fire_native", mutates_args=())
def fire_native(
    u: Tensor,
    mem0: Tensor,
    rec0: Tensor | None,
    beta: Tensor,
    gamma: Tensor | None,
    thr: Tensor,
    nthr: Tensor | None,
    bias: Tensor,
    kp: Tensor | None,
    kn: Tensor | None,
    w: Tensor | None,
    neuron: str,
    save: bool,
    slope: float,
    surrogate: str,
    detach_reset: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y [T, ...], mem_T, rec_T, M, R)``: outputs, final states, and (``save``) the pre-reset membranes and
    recurrent traces the backward needs; empty where absent. ``slope``, ``surrogate`` and ``detach_reset`` shape
    only the backward (they are inputs so that the autograd formula receives them)."""
    spec = NeuronSpec.from_name(neuron)
    u, mem0 = u.contiguous(), mem0.contiguous()
    rec0 = rec0.contiguous() if spec.recurrent else None
    plan = flat_plan(tuple(u.shape[1:]), beta=beta, gamma=gamma, thr=thr, nthr=nthr, bias=bias, kp=kp, kn=kn, w=w)
    Y = native.empty_like_huge(u)
    M = torch.empty_like(u) if save else None
    R = torch.empty_like(u) if save and spec.recurrent else None
    memT = torch.empty_like(mem0)
    recT = torch.empty_like(rec0) if spec.recurrent else None
    native.fire_forward(variant_of(spec), u.shape[0], plan.layout, plan.params, u, mem0, rec0, Y, M, R, memT, recT)
    return tuple(_nothing(u) if t is None else t for t in (Y, memT, recT, M, R))  # type: ignore[return-value]


@fire_native.register_fake
def _(u, mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn, w, neuron, save, slope, surrogate, detach_reset):
    recurrent = NeuronSpec.from_name(neuron).recurrent
    return (
        torch.empty_like(u),
        torch.empty_like(mem0),
        torch.empty_like(mem0) if recurrent else u.new_empty(0),
        torch.empty_like(u) if save else u.new_empty(0),
        torch.empty_like(u) if save and recurrent else u.new_empty(0),
    )


@torch.library.custom_op("tracetorch::fire_native_backward", mutates_args=())
def fire_native_backward(
    gY: Tensor | None,
    g_memT: Tensor | None,
    g_recT: Tensor | None,
    M: Tensor,
    R: Tensor | None,
    mem0: Tensor,
    rec0: Tensor | None,
    beta: Tensor,
    gamma: Tensor | None,
    thr: Tensor,
    nthr: Tensor | None,
    bias: Tensor,
    kp: Tensor | None,
    kn: Tensor | None,
    w: Tensor | None,
    neuron: str,
    slope: float,
    surrogate: str,
    detach_reset: bool,
    wanted: list[bool],
) -> list[Tensor]:
    """The gradients of :func:`fire_native`'s tensor inputs (``u, mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn,
    w``) flagged in ``wanted``, in that order."""
    cfg = _Config(neuron, slope, surrogate, detach_reset)
    p = {"beta": beta, "gamma": gamma, "thr": thr, "nthr": nthr, "bias": bias, "kp": kp, "kn": kn, "w": w}
    plan = flat_plan(tuple(M.shape[1:]), **p)
    want = dict(zip(_INPUTS, wanted, strict=True))
    g = flat_gradients(cfg, plan, native, M, R, mem0, rec0, p, want, gY, g_memT, g_recT)
    return [g[k] for k, on in want.items() if on]


@fire_native_backward.register_fake
def _(gY, g_memT, g_recT, M, R, mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn, w, neuron, slope, surrogate,
      detach_reset, wanted):  # fmt: skip
    like = {"u": M, "mem0": mem0, "rec0": rec0, "beta": beta, "gamma": gamma, "thr": thr, "nthr": nthr, "bias": bias}
    like |= {"kp": kp, "kn": kn, "w": w}
    return [torch.empty_like(like[k]) for k, on in zip(_INPUTS, wanted, strict=True) if on]


def _setup_context(ctx, inputs, output) -> None:
    _u, mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn, w, neuron, _save, slope, surrogate, detach_reset = inputs
    _, _, _, M, R = output
    ctx.spike = (neuron, slope, surrogate, detach_reset)
    ctx.save_for_backward(M, R, mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn, w)


def _backward(ctx, gY, g_memT, g_recT, _gM, _gR):
    M, R, mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn, w = ctx.saved_tensors
    present = (True, True, rec0 is not None, True, gamma is not None, True, nthr is not None, True, kp is not None,
               kn is not None, w is not None)  # fmt: skip
    wanted = [bool(need) and there for need, there in zip(ctx.needs_input_grad, present, strict=False)]
    g_recT = None if g_recT is None else _or_none(g_recT)
    grads = fire_native_backward(
        gY, g_memT, g_recT, M, _or_none(R), mem0, rec0, beta, gamma, thr, nthr, bias, kp, kn, w, *ctx.spike, wanted
    )
    by_name = dict(zip((k for k, on in zip(_INPUTS, wanted, strict=True) if on), grads, strict=True))
    return (*(by_name.get(k) for k in _INPUTS), None, None, None, None, None)


fire_native.register_autograd(_backward, setup_context=_setup_context)


def fire_native_compiled(
    spec: NeuronSpec, u: Tensor, state: dict[str, Tensor], p: dict[str, Tensor], spike_fn, detach_reset: bool,
    new: dict[str, Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """What :func:`tracetorch.ops.fire.fire_sequence` computes with the native kernels, through the custom op (for
    compiled graphs): a single-branch firing type with Heaviside spikes on the CPU."""
    s, fp = FireStates.of(spec, state), FireParams.of(spec, p)
    flat = [getattr(fp, k) for k in FLAT_PARAMS]
    save = torch.is_grad_enabled()
    y, memT, recT, _, _ = fire_native(
        u, s.mem, s.rec, *flat, spec.name, save, float(spike_fn.slope), spike_fn.surrogate, bool(detach_reset)
    )
    new["mem"] = memT
    if spec.recurrent:
        new["rec"] = recT
    return y, new
