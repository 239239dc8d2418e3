"""Fast whole-sequence paths for the spiking mechanism; the reference is the step loop over
:func:`tracetorch.functional.neuron_step`, and tests compare the two for every type.

* ``LI`` family and the synaptic stage: every trace is a first-order linear recurrence, one trace op over the
  whole sequence (:mod:`tracetorch.ops.trace`: native C on the CPU, else linear scans), sign splits and EMA
  scaling included.
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
from ..ops.trace import trace_sequence

__all__ = ["fused_sequence", "li_membrane_sequence", "synapse_sequence"]


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


def synapse_sequence(
    spec: NeuronSpec, x: Tensor, state: dict[str, Tensor], p: dict[str, Tensor], new: dict[str, Tensor]
) -> Tensor:
    """The synaptic stage (S) over a whole sequence: returns the drive ``u`` and puts the final synaptic
    states in ``new``; without S the drive is ``x`` itself."""
    if not spec.synaptic:
        return x
    if spec.dual:
        u, new["pos_syn"], new["neg_syn"] = trace_sequence(
            x, p["pos_alpha"], state["pos_syn"], True, p["neg_alpha"], state["neg_syn"]
        )
        return u
    u, new["syn"] = trace_sequence(x, p["alpha"], state["syn"], True)
    return u


def li_membrane_sequence(
    spec: NeuronSpec, u: Tensor, state: dict[str, Tensor], p: dict[str, Tensor], new: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Any]]:
    """The membrane of the 8 ``LI`` types over a whole drive ``u`` ``[T, ...]``: one trace op."""
    if spec.dual:
        y, new["pos_mem"], new["neg_mem"] = trace_sequence(
            u, p["pos_beta"], state["pos_mem"], spec.ema, p["neg_beta"], state["neg_mem"]
        )
        return y, new
    mem, last = trace_sequence(u, p["beta"], state["mem"], spec.ema)
    new["mem"] = last.clone()  # not a view of the output, which the caller may change in place
    return mem, new
