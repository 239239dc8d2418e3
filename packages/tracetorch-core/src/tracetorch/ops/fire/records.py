"""The typed records the firing op passes around instead of long positional argument lists: the effective
parameters and the states of a firing type's core, read once from a layer's dicts by name."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from ...functional.spiking import NeuronSpec

__all__ = ["FLAT_PARAMS", "FireParams", "FireStates"]


class FireParams(NamedTuple):
    """Effective parameters of a firing core, shaped to broadcast over a step; ``None`` where the type has none.
    ``beta``/``nbeta``: membrane decays (``nbeta``: the negative branch of D types); ``gamma``/``w``: recurrent trace
    decay and weight (``ngamma``/``nw``: the negative trace of D types with two); ``thr``/``nthr``: positive and
    negative thresholds; ``bias``; ``kp``/``kn``: the spike scales of TS types."""

    beta: Tensor
    nbeta: Tensor | None
    gamma: Tensor | None
    ngamma: Tensor | None
    thr: Tensor
    nthr: Tensor | None
    bias: Tensor
    kp: Tensor | None
    kn: Tensor | None
    w: Tensor | None
    nw: Tensor | None

    @classmethod
    def of(cls, spec: NeuronSpec, p: dict[str, Tensor]) -> FireParams:
        """From a layer's ``params()`` dict (names of :attr:`NeuronSpec.params`)."""
        g = p.get
        if spec.dual_rec:
            gamma, ngamma, w, nw = g("pos_gamma"), g("neg_gamma"), g("pos_rec_weight"), g("neg_rec_weight")
        else:
            gamma, ngamma, w, nw = g("gamma"), None, g("rec_weight"), None
        beta, nbeta = (p["pos_beta"], p["neg_beta"]) if spec.dual else (p["beta"], None)
        thr, nthr = (p["threshold"], None) if spec.family == "B" else (p["pos_threshold"], p["neg_threshold"])
        return cls(beta, nbeta, gamma, ngamma, thr, nthr, p["bias"], g("pos_scale"), g("neg_scale"), w, nw)


class FireStates(NamedTuple):
    """States of a firing core: membrane ``mem`` (``nm``: the negative one of D types), recurrent trace ``rec``
    (``nr``: the negative one of D types with two); ``None`` where the type has none."""

    mem: Tensor
    nm: Tensor | None
    rec: Tensor | None
    nr: Tensor | None

    @staticmethod
    def names(spec: NeuronSpec) -> tuple[str | None, str | None, str | None, str | None]:
        """The layer's state names (:attr:`NeuronSpec.states`) of the four fields, ``None`` where the type has none."""
        mem, nm = ("pos_mem", "neg_mem") if spec.dual else ("mem", None)
        if spec.dual_rec:
            return mem, nm, "pos_rec", "neg_rec"
        return mem, nm, ("rec" if spec.recurrent else None), None

    @classmethod
    def of(cls, spec: NeuronSpec, state: dict[str, Tensor]) -> FireStates:
        """From a layer's state dict (names of :attr:`NeuronSpec.states`)."""
        return cls(*(None if k is None else state[k] for k in cls.names(spec)))


# the parameters the flat kernels (native C, Triton) take, by their FireParams names: all of them
FLAT_PARAMS = FireParams._fields
