"""The native C firing kernels as ``torch.library`` custom ops, so compiled graphs keep them.

``ctypes`` calls are opaque to dynamo: a compiled ``scan`` would break its graph there (``fullgraph=True`` fails).
Registered as ``tracetorch::fire_native`` (forward) and ``tracetorch::fire_native_backward`` with fake
implementations (shapes only) and an autograd formula, they appear in ``torch.compile`` and ``torch.export`` graphs
as single nodes, run the same kernels through :mod:`.flat` (:func:`.flat.flat_pass`, :func:`.flat.flat_gradients`)
and give the same numbers as the eager path (:class:`.torch_kernel.FiringCore` with the native kernels). Eager
calls keep using ``FiringCore``.

The states and parameters are passed as the fields of :class:`.records.FireStates` and :class:`.records.FireParams`,
absent ones as ``None``; absent outputs come back as empty tensors (custom ops return no ``None``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...functional.spiking import NeuronSpec
from . import native
from .flat import flat_gradients, flat_pass, flat_plan
from .records import FireParams, FireStates

__all__ = ["fire_native_compiled"]

_SAVED = ("M", "NM", "R", "NR")  # what a saving forward returns after the outputs and the final states


def _or_none(t: Tensor | None) -> Tensor | None:
    return None if t is None or (t.numel() == 0 and t.ndim == 1) else t


class _Config:
    """What ``flat_gradients`` reads of a ``FireConfig``, rebuilt from the op's plain arguments."""

    def __init__(self, neuron: str, slope: float, surrogate: str, detach_reset: bool) -> None:
        self.spec = NeuronSpec.from_name(neuron)
        self.slope, self.surrogate, self.detach_reset = slope, surrogate, detach_reset


_N_STATES, _N_PARAMS = len(FireStates._fields), len(FireParams._fields)


@torch.library.custom_op("tracetorch::fire_native", mutates_args=())
def fire_native(
    u: Tensor,
    mem0: Tensor,
    nm0: Tensor | None,
    rec0: Tensor | None,
    nr0: Tensor | None,
    beta: Tensor,
    nbeta: Tensor | None,
    gamma: Tensor | None,
    ngamma: Tensor | None,
    thr: Tensor,
    nthr: Tensor | None,
    bias: Tensor,
    kp: Tensor | None,
    kn: Tensor | None,
    w: Tensor | None,
    nw: Tensor | None,
    neuron: str,
    save: bool,
    slope: float,
    surrogate: str,
    detach_reset: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(y [T, ...], mem_T, nm_T, rec_T, nr_T, M, NM, R, NR)``: outputs, final states (:class:`FireStates` order)
    and (``save``) the pre-reset membranes and recurrent traces the backward needs; empty where absent. The states
    and parameters are the fields of :class:`FireStates` and :class:`FireParams` (custom ops take no records; lists
    of tensors do not carry gradients through compiled graphs). ``slope``, ``surrogate`` and ``detach_reset`` shape
    only the backward (they are inputs so that the autograd formula receives them)."""
    spec = NeuronSpec.from_name(neuron)
    s0 = FireStates(mem0, nm0, rec0, nr0)
    p = FireParams(beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw)
    _, Y, finals, saved = flat_pass(spec, u, s0, p, native, save, alloc=torch.empty_like)
    finals_out = [finals[f] if f in finals else u.new_empty(0) for f in FireStates._fields]  # no two alias
    return (Y, *finals_out, *(saved[k] if k in saved else u.new_empty(0) for k in _SAVED))  # type: ignore[return-value]


@fire_native.register_fake
def _(u, *rest):
    states, save = rest[:_N_STATES], rest[_N_STATES + _N_PARAMS + 1]
    finals = [u.new_empty(0) if s is None else torch.empty_like(s) for s in states]
    kept = [u.new_empty(0) if s is None or not save else torch.empty_like(u) for s in states]
    return (torch.empty_like(u), *finals, *kept)


@torch.library.custom_op("tracetorch::fire_native_backward", mutates_args=())
def fire_native_backward(
    gY: Tensor | None,
    g_mem: Tensor | None,
    g_nm: Tensor | None,
    g_rec: Tensor | None,
    g_nr: Tensor | None,
    u: Tensor,
    M: Tensor,
    NM: Tensor | None,
    R: Tensor | None,
    NR: Tensor | None,
    mem0: Tensor,
    nm0: Tensor | None,
    rec0: Tensor | None,
    nr0: Tensor | None,
    beta: Tensor,
    nbeta: Tensor | None,
    gamma: Tensor | None,
    ngamma: Tensor | None,
    thr: Tensor,
    nthr: Tensor | None,
    bias: Tensor,
    kp: Tensor | None,
    kn: Tensor | None,
    w: Tensor | None,
    nw: Tensor | None,
    neuron: str,
    slope: float,
    surrogate: str,
    detach_reset: bool,
    wanted: list[bool],
) -> list[Tensor]:
    """The gradients of :func:`fire_native`'s tensor inputs (``u``, the states, the parameters) flagged in
    ``wanted``, in that order."""
    cfg = _Config(neuron, slope, surrogate, detach_reset)
    s0 = FireStates(mem0, nm0, rec0, nr0)
    p = FireParams(beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw)
    plan = flat_plan(tuple(u.shape[1:]), **p._asdict())
    want = dict(zip(_INPUTS, wanted, strict=True))
    kept = {"u": u, "M": M, "NM": NM, "R": R, "NR": NR}
    g_states = dict(zip(FireStates._fields, (g_mem, g_nm, g_rec, g_nr), strict=True))
    g = flat_gradients(cfg, plan, native, kept, s0, p._asdict(), want, gY, g_states)
    return [g[k] for k, on in want.items() if on]


@fire_native_backward.register_fake
def _(*args):
    like, wanted = args[5:6] + args[10:25], args[-1]  # u, the states, the parameters
    return [torch.empty_like(t) for t, on in zip(like, wanted, strict=True) if on]


_INPUTS = ("u", *FireStates._fields, *FireParams._fields)  # fire_native's tensor inputs, in order
_N_TENSORS = len(_INPUTS)


def _setup_context(ctx, inputs, output) -> None:
    tensors, spike = inputs[:_N_TENSORS], inputs[_N_TENSORS:]
    neuron, _save, slope, surrogate, detach_reset = spike
    ctx.spike = (neuron, slope, surrogate, detach_reset)
    ctx.present = [t is not None for t in tensors]
    ctx.save_for_backward(*tensors, *(_or_none(t) for t in output[5:]))


def _backward(ctx, gY, *g_rest):
    tensors, saved = ctx.saved_tensors[:_N_TENSORS], ctx.saved_tensors[_N_TENSORS:]
    wanted = [bool(n) and there for n, there in zip(ctx.needs_input_grad, ctx.present, strict=False)]
    g_finals = [_or_none(g) for g in g_rest[:4]]
    u, states, params = tensors[0], tensors[1 : 1 + _N_STATES], tensors[1 + _N_STATES :]
    grads = fire_native_backward(gY, *g_finals, u, *saved, *states, *params, *ctx.spike, wanted)
    by_name = dict(zip((k for k, on in zip(_INPUTS, wanted, strict=True) if on), grads, strict=True))
    return (*(by_name.get(k) for k in _INPUTS), None, None, None, None, None)


fire_native.register_autograd(_backward, setup_context=_setup_context)


def fire_native_compiled(
    spec: NeuronSpec, u: Tensor, state: dict[str, Tensor], p: dict[str, Tensor], spike_fn, detach_reset: bool,
    new: dict[str, Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """What :func:`tracetorch.ops.fire.fire_sequence` computes with the native kernels, through the custom op (for
    compiled graphs): a firing type with Heaviside spikes on the CPU (under D, ``u`` is the whole drive)."""
    s, fp = FireStates.of(spec, state), FireParams.of(spec, p)
    save = torch.is_grad_enabled()
    y, *finals = fire_native(
        u, *s, *fp, spec.name, save, float(spike_fn.slope), spike_fn.surrogate, bool(detach_reset)
    )[:5]
    for name, final in zip(FireStates.names(spec), finals, strict=True):
        if name is not None:
            new[name] = final
    return y, new
