"""``LIB``: leaky integrate-and-fire with binary spikes, subtractive reset and a surrogate gradient."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..functional.neurons import LIBParams, LIBState, lib_step
from ..functional.spike import Heaviside
from ..layer import Layer

__all__ = ["LIB"]


class LIB(Layer):
    """Leaky integrate-and-fire (the classic LIF): ``mem <- beta * mem + x``; spike 1 when
    ``mem >= threshold``; ``mem <- mem - spike * threshold``. Returns the 0/1 spikes.

    Args:
        num_neurons: features along ``dim``.
        beta: membrane decay in [0, 1].
        threshold: firing threshold > 0 (softplus-constrained when learnable).
        dim: feature axis of the per-step input (``-1`` for ``[B, N]``, ``-3`` for ``[B, C, H, W]``).
        beta_rank, threshold_rank: 1 per neuron (default) or 0 shared.
        learn_beta, learn_threshold: train the parameter or keep it fixed.
        spike_fn: a surrogate name (``"sigmoid"``, ``"atan"``, ``"fast_sigmoid"``, ``"triangle"``), a
            :class:`~tracetorch.functional.Heaviside`, or any callable ``v -> spikes`` (``v = mem - threshold``).
        detach_reset: stop gradients through the reset term.

    Everything after ``threshold`` is keyword-only, so positional calls cannot silently change meaning when
    parameters are added (the original's 0.19.2 inserted ``bias`` positionally).
    States: ``mem``.
    """

    State = LIBState
    Params = LIBParams

    def __init__(
        self,
        num_neurons: int,
        beta: float | Tensor = 0.9,
        threshold: float | Tensor = 1.0,
        *,
        dim: int = -1,
        beta_rank: int = 1,
        threshold_rank: int = 1,
        learn_beta: bool = True,
        learn_threshold: bool = True,
        spike_fn: str | Callable[[Tensor], Tensor] = "sigmoid",
        detach_reset: bool = False,
    ) -> None:
        super().__init__(num_neurons, dim=dim)
        self.define_decay("beta", beta, rank=beta_rank, learnable=learn_beta)
        self.define_threshold("threshold", threshold, rank=threshold_rank, learnable=learn_threshold)
        self.define_state("mem")
        self.spike_fn = Heaviside(spike_fn) if isinstance(spike_fn, str) else spike_fn
        if not callable(self.spike_fn):
            raise TypeError(f"LIB: spike_fn must be a surrogate name or a callable, got {spike_fn!r}")
        self.detach_reset = bool(detach_reset)

    def step(self, x: Tensor, state: LIBState, params: LIBParams) -> tuple[Tensor, LIBState]:
        return lib_step(x, state, params, self.spike_fn, self.detach_reset)
