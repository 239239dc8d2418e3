"""Pure functions: neuron step functions, spike functions with surrogate gradients, decay conversions."""

from .decay import (
    decay_to_halflife,
    decay_to_horizon,
    decay_to_tau,
    halflife_to_decay,
    horizon_to_decay,
    tau_to_decay,
)
from .neurons import LIBParams, LIBState, LIParams, LIState, li_step, lib_step
from .spike import SURROGATES, Heaviside, heaviside, surrogate_grad

__all__ = [
    "SURROGATES",
    "Heaviside",
    "LIBParams",
    "LIBState",
    "LIParams",
    "LIState",
    "decay_to_halflife",
    "decay_to_horizon",
    "decay_to_tau",
    "halflife_to_decay",
    "heaviside",
    "horizon_to_decay",
    "li_step",
    "lib_step",
    "surrogate_grad",
    "tau_to_decay",
]
