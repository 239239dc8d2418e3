"""Pure step functions of the neuron models: ``(x, state, params) -> (y, state)``.

Tensors are in the caller's layout; per-neuron parameters are already shaped to broadcast along the feature
axis (``tt.Layer.params`` does that). Nothing here holds state or reads a module: these are what the layers
wrap, and what to test, compile and export.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .spike import heaviside

__all__ = ["LIBParams", "LIBState", "LIParams", "LIState", "li_step", "lib_step"]


class LIState(NamedTuple):
    mem: Tensor  #: membrane potential, same shape as the input


class LIParams(NamedTuple):
    beta: Tensor  #: membrane decay in [0, 1]


def li_step(x: Tensor, state: LIState, params: LIParams) -> tuple[Tensor, LIState]:
    """Leaky integrator: ``mem <- beta * mem + x``; the output is the membrane."""
    mem = torch.addcmul(x, params.beta, state.mem)
    return mem, LIState(mem)


class LIBState(NamedTuple):
    mem: Tensor  #: membrane potential, same shape as the input


class LIBParams(NamedTuple):
    beta: Tensor  #: membrane decay in [0, 1]
    threshold: Tensor  #: firing threshold > 0


def lib_step(
    x: Tensor,
    state: LIBState,
    params: LIBParams,
    spike_fn: Callable[[Tensor], Tensor] = heaviside,
    detach_reset: bool = False,
) -> tuple[Tensor, LIBState]:
    """Leaky integrate-and-fire with binary spikes and subtractive reset.

    ``mem <- beta * mem + x``; ``s = spike_fn(mem - threshold)`` (0/1); ``mem <- mem - s * threshold``.
    Returns the spikes. ``detach_reset`` stops gradients through the reset term (Zenke & Vogels 2021 found
    this helps); by default they flow, as in the original traceTorch.
    """
    mem = torch.addcmul(x, params.beta, state.mem)
    spk = spike_fn(mem - params.threshold)
    reset = spk.detach() if detach_reset else spk
    mem = mem - reset * params.threshold
    return spk, LIBState(mem)
