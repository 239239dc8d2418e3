"""The 32 spiking layer types: thin names over one mechanism (:mod:`tracetorch.functional.spiking`).

Each class below only names a :class:`~tracetorch.functional.NeuronSpec` (``neuron=``); ``SpikingLayer`` turns the spec
into parameters, states, a constructor signature and a docstring, runs the reference step
(:func:`~tracetorch.functional.neuron_step`) per call, and a fused path in ``scan``
(:mod:`tracetorch.snn.sequence`).

Constructor, for every type: ``Name(num_neurons, <parameter values in the original's positional order>, *,
dim=-1, <name>_rank=1 ..., learn_<name>=True ..., spike_fn="sigmoid", detach_reset=False)``. The last two
exist for firing types only. ``help(tracetorch.snn.DSRLITS)`` lists the exact parameters.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..autocast import LOW_PRECISION
from ..functional.spike import make_spike_fn
from ..functional.spiking import NAMES, NeuronSpec, neuron_step
from ..layer import Layer
from ..ops import backend
from . import sequence as _sequence
from .streaming import fast_native_step, stream_step

__all__ = ["SpikingLayer", *NAMES]

_FAMILY = {
    "LI": "leaky integrator (the membrane is the output)",
    "B": "binary spikes (0/1) with one threshold",
    "T": "ternary spikes (-1/0/1) with a positive and a negative threshold",
    "TS": "ternary spikes with a learnable scale per polarity",
}
_PREFIX = {
    "dual": "dual: positive and negative copies of every trace, each with its own decay",
    "synaptic": "synaptic: an EMA trace of the input before the membrane (decay alpha)",
    "recurrent": "recurrent: an EMA trace of the layer's own output fed back through a per-neuron weight",
}


def _signature(spec: NeuronSpec) -> inspect.Signature:
    P = inspect.Parameter
    params = [P("num_neurons", P.POSITIONAL_OR_KEYWORD)]
    params += [P(p.name, P.POSITIONAL_OR_KEYWORD, default=p.default) for p in spec.params]
    params.append(P("dim", P.KEYWORD_ONLY, default=-1))
    params += [P(f"{p.name}_rank", P.KEYWORD_ONLY, default=1) for p in spec.params]
    params += [P(f"learn_{p.name}", P.KEYWORD_ONLY, default=True) for p in spec.params]
    if spec.fires:
        params += [P("spike_fn", P.KEYWORD_ONLY, default="sigmoid"), P("detach_reset", P.KEYWORD_ONLY, default=False)]
    return inspect.Signature(params)


def _docstring(spec: NeuronSpec, summary: str | None) -> str:
    lines = [summary or f"``{spec.name}``: {_FAMILY[spec.family]}."]
    if summary:
        lines += ["", f"Family: {_FAMILY[spec.family]}."]
    parts = [_PREFIX[k] for k in ("dual", "synaptic", "recurrent") if getattr(spec, k)]
    if spec.ema:
        parts.append("EMA: the membrane is an exponential moving average (input scaled by 1 - beta)")
    if parts:
        lines += ["", "Parts: " + "; ".join(parts) + "."]
    lines += ["", "Args:", "    num_neurons: features along ``dim``."]
    for p in spec.params:
        kind = {"sigmoid": "decay in [0, 1]", "softplus": "threshold > 0", "identity": "any sign"}[p.constraint]
        lines.append(f"    {p.name}: {kind}, default {p.default:g}; a number or a tensor of ``num_neurons``.")
    lines += [
        "    dim: feature axis of the per-step input (-1 for [B, N], -3 for [B, C, H, W]).",
        "    <name>_rank: 1 (default) one value per neuron, 0 one shared value.",
        "    learn_<name>: train the parameter (default) or keep it fixed.",
    ]
    if spec.fires:
        lines += [
            '    spike_fn: surrogate name ("sigmoid", "atan", "fast_sigmoid", "triangle"), mode ("round",',
            '        "stochastic", "smooth"), a SpikeFunction, or a callable v -> spikes.',
            "    detach_reset: stop gradients through the reset.",
        ]
    lines += ["", f"States: {', '.join(spec.states)}."]
    lines.append("Shapes: per step ``[*, N, *]`` -> same; scan ``[T, ...]`` -> same.")
    return "\n".join(lines)


class SpikingLayer(Layer):
    """Base of the 32 spiking types. A class names its neuron type, ``class LIB(SpikingLayer, neuron="LIB")``, and
    gets everything else from the spec: parameters, states, constructor signature, docstring. A subclass of a type
    (``class MyLIB(snn.LIB)``) is that type; one that overrides :meth:`step` runs it in every mode
    (:attr:`~tracetorch.Layer.reference_only`)."""

    spec: ClassVar[NeuronSpec]
    _signature: ClassVar[inspect.Signature]

    def __init_subclass__(cls, neuron: str | NeuronSpec | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if neuron is None:
            if not hasattr(cls, "spec"):
                raise TypeError(
                    f"{cls.__name__}: a direct subclass of SpikingLayer names its neuron type, e.g. "
                    f'class {cls.__name__}(SpikingLayer, neuron="LIB"); or subclass a type: '
                    f"class {cls.__name__}(snn.LIB)"
                )
            if "__init__" in cls.__dict__:  # its own constructor: let inspect read it, not the type's signature
                cls.__signature__ = None
            return
        cls.spec = neuron if isinstance(neuron, NeuronSpec) else NeuronSpec.from_name(neuron)
        cls._signature = _signature(cls.spec)
        cls.__signature__ = cls._signature
        cls.__doc__ = _docstring(cls.spec, inspect.cleandoc(cls.__doc__) if cls.__doc__ else None)

    def __init__(self, num_neurons: int, *args: Any, **kwargs: Any) -> None:
        try:
            bound = self._signature.bind(num_neurons, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}{self._signature}: {exc}") from None
        bound.apply_defaults()
        a = bound.arguments
        super().__init__(num_neurons, dim=a["dim"])
        for p in self.spec.params:
            self.define_parameter(
                p.name, a[p.name], rank=a[f"{p.name}_rank"], learnable=a[f"learn_{p.name}"], constraint=p.constraint
            )
        for name in self.spec.states:
            self.define_state(name)
        self.__dict__["_raw_names"] = tuple(f"raw_{p.name}" for p in self.spec.params)
        if self.spec.fires:
            self.spike_fn = make_spike_fn(a["spike_fn"])
            self.detach_reset = bool(a["detach_reset"])
        else:
            self.spike_fn, self.detach_reset = None, False

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "spike_fn":  # a plain reference for the streaming path (submodule lookups are slow)
            self.__dict__["_spike"] = value

    def step(self, x: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, Any]:
        return neuron_step(x, state, params, self.spec, self.spike_fn, self.detach_reset)

    def forward(self, x: Tensor) -> Tensor:
        """One time step. Without autograd (inference, streaming) a lean path with cached parameters runs;
        it computes the same numbers as the reference step."""
        # autocast changes no element-wise op: only a float16/bfloat16 input needs the general path's upcast
        if not torch.is_grad_enabled() and not torch.compiler.is_compiling() and x.dtype not in LOW_PRECISION:
            # LIB on the native kernel, prepared by a first stream_step (so never for a reference_only layer); a
            # change of backend since then makes fast_native_step decline (its plan's backend generation)
            fast = self.__dict__.get("_stream_fast")
            if fast is not None:
                y = fast_native_step(self.__dict__, fast, x)
                if y is not None:
                    return y
            if not self.reference_only and not backend.REFERENCE:
                y = stream_step(self, x)
                if y is not None:
                    return y
        return super().forward(x)

    def sequence(self, x_seq: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, Any]:
        if not self.reference_only and not backend.REFERENCE:
            fast = _sequence.fused_sequence(self.spec, x_seq, state, params, self.spike_fn, self.detach_reset)
            if fast is not None:
                return fast
        return super().sequence(x_seq, state, params)


# fmt: off
class LI(SpikingLayer, neuron="LI"):
    """``LI``: leaky integrator, ``mem <- beta mem + x``, output ``mem``. A common readout."""
class DLI(SpikingLayer, neuron="DLI"): pass  # noqa: E701
class SLI(SpikingLayer, neuron="SLI"): pass  # noqa: E701
class DSLI(SpikingLayer, neuron="DSLI"): pass  # noqa: E701
class LIEMA(SpikingLayer, neuron="LIEMA"): pass  # noqa: E701
class DLIEMA(SpikingLayer, neuron="DLIEMA"): pass  # noqa: E701
class SLIEMA(SpikingLayer, neuron="SLIEMA"): pass  # noqa: E701
class DSLIEMA(SpikingLayer, neuron="DSLIEMA"): pass  # noqa: E701
class LIB(SpikingLayer, neuron="LIB"):
    """``LIB``: leaky integrate-and-fire (the classic LIF). ``mem <- beta mem + x``; spike 1 when
    ``mem >= threshold - bias``; ``mem <- mem - spike * threshold``. Returns the 0/1 spikes."""
class DLIB(SpikingLayer, neuron="DLIB"): pass  # noqa: E701
class SLIB(SpikingLayer, neuron="SLIB"): pass  # noqa: E701
class RLIB(SpikingLayer, neuron="RLIB"): pass  # noqa: E701
class DSLIB(SpikingLayer, neuron="DSLIB"): pass  # noqa: E701
class DRLIB(SpikingLayer, neuron="DRLIB"): pass  # noqa: E701
class SRLIB(SpikingLayer, neuron="SRLIB"): pass  # noqa: E701
class DSRLIB(SpikingLayer, neuron="DSRLIB"): pass  # noqa: E701
class LIT(SpikingLayer, neuron="LIT"): pass  # noqa: E701
class DLIT(SpikingLayer, neuron="DLIT"): pass  # noqa: E701
class SLIT(SpikingLayer, neuron="SLIT"): pass  # noqa: E701
class RLIT(SpikingLayer, neuron="RLIT"): pass  # noqa: E701
class DSLIT(SpikingLayer, neuron="DSLIT"): pass  # noqa: E701
class DRLIT(SpikingLayer, neuron="DRLIT"): pass  # noqa: E701
class SRLIT(SpikingLayer, neuron="SRLIT"): pass  # noqa: E701
class DSRLIT(SpikingLayer, neuron="DSRLIT"): pass  # noqa: E701
class LITS(SpikingLayer, neuron="LITS"): pass  # noqa: E701
class DLITS(SpikingLayer, neuron="DLITS"): pass  # noqa: E701
class SLITS(SpikingLayer, neuron="SLITS"): pass  # noqa: E701
class RLITS(SpikingLayer, neuron="RLITS"): pass  # noqa: E701
class DSLITS(SpikingLayer, neuron="DSLITS"): pass  # noqa: E701
class DRLITS(SpikingLayer, neuron="DRLITS"): pass  # noqa: E701
class SRLITS(SpikingLayer, neuron="SRLITS"): pass  # noqa: E701
class DSRLITS(SpikingLayer, neuron="DSRLITS"): pass  # noqa: E701
# fmt: on
