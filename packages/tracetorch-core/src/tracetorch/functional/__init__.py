"""Pure functions: the neuron step of every spiking type, spike functions with surrogate gradients, decay
conversions."""

from .decay import (
    decay_to_halflife,
    decay_to_horizon,
    decay_to_tau,
    halflife_to_decay,
    horizon_to_decay,
    tau_to_decay,
)
from .spike import MODES, SURROGATES, Heaviside, SpikeFunction, heaviside, make_spike_fn, spike, surrogate_grad
from .spiking import NAMES, NeuronSpec, ParamSpec, ema, neuron_step

__all__ = [
    "MODES",
    "NAMES",
    "SURROGATES",
    "Heaviside",
    "NeuronSpec",
    "ParamSpec",
    "SpikeFunction",
    "decay_to_halflife",
    "decay_to_horizon",
    "decay_to_tau",
    "ema",
    "halflife_to_decay",
    "heaviside",
    "horizon_to_decay",
    "make_spike_fn",
    "neuron_step",
    "spike",
    "surrogate_grad",
    "tau_to_decay",
]
