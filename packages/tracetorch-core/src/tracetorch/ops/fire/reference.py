"""The reference of the firing op: the step loop over :func:`tracetorch.functional.neuron_step` (the definition of
every neuron type) for the type without its synaptic stage, which :mod:`tracetorch.snn.sequence` applies first."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from ...functional.spiking import NeuronSpec, neuron_step

__all__ = ["fire_sequence_ref"]


def fire_sequence_ref(
    spec: NeuronSpec,
    u: Tensor,
    state: dict[str, Tensor],
    p: dict[str, Tensor],
    spike_fn: Callable[[Tensor], Tensor],
    detach_reset: bool,
    new: dict[str, Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:
    """What :func:`tracetorch.ops.fire.fire_sequence` computes, by autograd through a loop of steps: the firing core
    of ``spec`` over the drive ``u`` ``[T, ...]`` from ``state`` (its membrane and recurrent states), with effective
    parameters ``p``; fills ``new`` with the final states and returns ``(y [T, ...], new)``."""
    core = dataclasses.replace(spec, synaptic=False)
    s = {k: state[k] for k in core.states}
    ys = []
    for u_t in u.unbind(0):
        y, s = neuron_step(u_t, s, p, core, spike_fn, detach_reset)
        ys.append(y)
    new.update(s)
    return torch.stack(ys), new
