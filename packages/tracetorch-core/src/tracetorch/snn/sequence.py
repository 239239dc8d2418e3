"""Fast whole-sequence paths for the spiking mechanism; the reference is the step loop over
:func:`tracetorch.functional.neuron_step`, and tests compare the two for every type.

* ``LI`` family: every trace is a first-order linear recurrence, so each is one
  :func:`~tracetorch.ops.linear_scan` over the whole sequence (one autograd node per trace), with the
  element-wise parts (sign splits, EMA input scaling) applied to all steps at once.
* firing families: the firing op, one autograd node (:mod:`tracetorch.ops.fire`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..functional.spike import SpikeFunction
from ..functional.spiking import NeuronSpec
from ..ops.fire import compiles_natively, fire_sequence
from ..ops.linear_scan import linear_scan

__all__ = ["ema_scan", "fused_sequence", "li_membrane_sequence", "synapse_sequence"]


def fused_sequence(
    spec: NeuronSpec,
    x_seq: Tensor,
    state: dict[str, Tensor],
    params: dict[str, Tensor],
    spike_fn: Callable[[Tensor], Tensor] | None,
    detach_reset: bool,
) -> tuple[Tensor, dict[str, Tensor]] | None:
    """The fastest available path for ``spec``, or ``None`` to use the reference step loop (a firing type
    with a custom spike callable, or tensors of mixed dtypes)."""
    if spec.fires:
        if not isinstance(spike_fn, SpikeFunction):
            return None
        if any(t.dtype != x_seq.dtype for t in (*state.values(), *params.values())):
            return None
        if torch.compiler.is_compiling() and not compiles_natively(spec, x_seq, spike_fn, detach_reset):
            return None  # compiled graphs trace the step loop, or keep the native kernels as one custom op
    new: dict[str, Tensor] = {}
    u = synapse_sequence(spec, x_seq, state, params, new)
    if spec.fires:
        return fire_sequence(spec, u, state, params, spike_fn, detach_reset, new)
    return li_membrane_sequence(spec, u, state, params, new)


def ema_scan(x: Tensor, decay: Tensor, h0: Tensor) -> Tensor:
    """``h_t = decay h_{t-1} + (1 - decay) x_t`` for all t, as ``functional.spiking.ema`` computes each step."""
    return linear_scan((1 - decay) * x, decay, h0)


def synapse_sequence(
    spec: NeuronSpec, x: Tensor, state: dict[str, Tensor], p: dict[str, Tensor], new: dict[str, Tensor]
) -> Tensor:
    """The synaptic stage (S) over a whole sequence: returns the drive ``u`` and puts the final synaptic
    states in ``new``; without S the drive is ``x`` itself."""
    if not spec.synaptic:
        return x
    if spec.dual:
        pos = ema_scan(x.clamp(min=0), p["pos_alpha"], state["pos_syn"])
        neg = ema_scan(x.clamp(max=0), p["neg_alpha"], state["neg_syn"])
        new["pos_syn"], new["neg_syn"] = pos[-1], neg[-1]
        return pos + neg
    u = ema_scan(x, p["alpha"], state["syn"])
    new["syn"] = u[-1]
    return u


def li_membrane_sequence(
    spec: NeuronSpec, u: Tensor, state: dict[str, Tensor], p: dict[str, Tensor], new: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Any]]:
    """The membrane of the 8 ``LI`` types over a whole drive ``u`` ``[T, ...]``: linear scans."""
    membrane = ema_scan if spec.ema else linear_scan
    if spec.dual:
        pos = membrane(u.clamp(min=0), p["pos_beta"], state["pos_mem"])
        neg = membrane(u.clamp(max=0), p["neg_beta"], state["neg_mem"])
        new["pos_mem"], new["neg_mem"] = pos[-1], neg[-1]
        return pos + neg, new
    mem = membrane(u, p["beta"], state["mem"])
    new["mem"] = mem[-1].clone()  # not a view of the output, which the caller may change in place
    return mem, new
