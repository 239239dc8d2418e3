"""``LI``: leaky integrator (membrane with decay beta, no spikes)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..functional.neurons import LIParams, LIState, li_step
from ..layer import Layer
from ..ops.linear_scan import linear_scan

__all__ = ["LI"]


class LI(Layer):
    """Leaky integrator: ``mem <- beta * mem + x``, output ``mem``. A common readout for spiking networks.

    Args:
        num_neurons: features along ``dim``.
        beta: membrane decay in [0, 1] (number or tensor of ``num_neurons``); 1 = perfect integrator
            (only with ``learn_beta=False``).
        dim: feature axis of the per-step input (``-1`` for ``[B, N]``, ``-3`` for ``[B, C, H, W]``).
        beta_rank: 1 (default) for one decay per neuron, 0 for one shared decay.
        learn_beta: train beta (through a sigmoid) or keep it fixed.

    Shapes: per step ``x`` ``[*, N, *]`` -> same shape; ``scan`` ``[T, *, N, *]`` -> same shape.
    States: ``mem``.
    """

    State = LIState
    Params = LIParams

    def __init__(
        self,
        num_neurons: int,
        beta: float | Tensor = 0.9,
        *,
        dim: int = -1,
        beta_rank: int = 1,
        learn_beta: bool = True,
    ) -> None:
        super().__init__(num_neurons, dim=dim)
        self.define_decay("beta", beta, rank=beta_rank, learnable=learn_beta)
        self.define_state("mem")

    def step(self, x: Tensor, state: LIState, params: LIParams) -> tuple[Tensor, LIState]:
        return li_step(x, state, params)

    def sequence(self, x_seq: Tensor, state: LIState, params: LIParams) -> tuple[Tensor, Any]:
        mem = linear_scan(x_seq, params.beta, state.mem)
        return mem, LIState(mem[-1])
