"""The one mechanism behind all 32 spiking layer types: a spec parsed from the name, and a pure step.

Names are ``[D][S][R]LI`` + family: ``LI`` (leaky integrator, the membrane is the output; ``EMA`` variant),
``B`` (binary spikes, one threshold), ``T`` (ternary, -1/0/1, two thresholds), ``TS`` (ternary with a
learnable scale per polarity). Prefixes: ``D`` dual (positive and negative copies of every trace, each with
its own decay), ``S`` synaptic (an EMA trace of the input before the membrane), ``R`` recurrent (an EMA trace
of the layer's own output fed back through a per-neuron weight). ``R`` exists for firing families only,
``EMA`` for ``LI`` only: 8 + 3 x 8 = 32 names.

One step, in order (``[v]+ = max(v, 0)``, ``[v]- = min(v, 0)``; per-neuron parameters broadcast):

* S  ``syn <- a syn + (1 - a) x``; under D ``pos_syn`` takes ``[x]+``, ``neg_syn`` takes ``[x]-``;
  ``u = syn`` (``pos_syn + neg_syn``); without S, ``u = x``.
* R  drive ``I = u + w rec`` (under D: ``I+ = [u]+ + w+ [r]+``, ``I- = [u]- + w- [r]-``, r the summed trace).
* M  ``mem <- beta mem + c I`` with ``c = 1``, or ``1 - beta`` for ``EMA``; under D one membrane per sign,
  ``m = pos_mem + neg_mem``. ``LI`` layers return ``m`` here.
* F  ``B``: ``s = f(m - (theta - b))``; ``T``: ``s = f(m - (theta+ - b)) - f(-(theta- + b) - m)``;
  ``TS``: the two polarities scaled by ``k+`` and ``k-``. ``f`` is the spike function.
* Z  subtractive reset by the unscaled spikes: ``mem <- mem - s+ theta+ + s- theta-``.
* R  ``rec <- g rec + (1 - g) o`` with the unscaled output ``o`` (under D, split by sign).

Differences from the original traceTorch (SPEC.md), each a fix of a listed weakness:
the recurrent trace is advanced at the end of step t from o_t instead of at the start of step t+1 from a
stored ``prev_output`` (identical outputs, one state fewer); ``D`` firing layers reset the branch of the
spike's own sign (a positive spike lowers ``pos_mem``, a negative one raises ``neg_mem``) instead of half of
each, so the branches keep their sign; binary ``D*RLIB`` layers, whose output is never negative, keep one
recurrent trace (``gamma``, ``rec_weight``) instead of dead negative copies; ``TS`` feeds back and resets by
the unscaled output (as upstream's newest code); ``bias`` is a plain (identity) parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = ["NAMES", "NeuronSpec", "ParamSpec", "ema", "neuron_step"]

_NAME = re.compile(r"^(D?)(S?)(R?)LI(B|T|TS|EMA)?$")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float
    constraint: str  # "sigmoid" (decays), "softplus" (thresholds), "identity"


@dataclass(frozen=True)
class NeuronSpec:
    """Which parts a neuron type has. ``family`` is ``"LI"``, ``"B"``, ``"T"`` or ``"TS"``."""

    dual: bool = False
    synaptic: bool = False
    recurrent: bool = False
    family: str = "LI"
    ema: bool = False

    @classmethod
    def from_name(cls, name: str) -> NeuronSpec:
        """The spec of a type name (``"DSRLITS"`` -> dual, synaptic, recurrent, family ``TS``); ``ValueError`` for
        a name that is not one of the 32."""
        m = _NAME.match(name)
        if not m:
            raise ValueError(f"{name!r} is not a spiking layer name ([D][S][R]LI + B, T, TS or EMA)")
        d, s, r, fam = m.groups()
        spec = cls(
            dual=bool(d),
            synaptic=bool(s),
            recurrent=bool(r),
            family="LI" if fam in (None, "EMA") else fam,
            ema=fam == "EMA",
        )
        if spec.recurrent and spec.family == "LI":
            raise ValueError(f"{name!r}: the recurrent prefix R exists only for firing layers (B, T, TS)")
        return spec

    @property
    def name(self) -> str:
        """The type's name, ``[D][S][R]LI`` + family (``""`` for LI, ``B``, ``T``, ``TS``) or ``EMA``."""
        suffix = "EMA" if self.ema else ("" if self.family == "LI" else self.family)
        return f"{'D' * self.dual}{'S' * self.synaptic}{'R' * self.recurrent}LI{suffix}"

    @property
    def fires(self) -> bool:
        """Whether the type emits spikes (B, T, TS) rather than its membrane (LI)."""
        return self.family != "LI"

    @property
    def ternary(self) -> bool:
        """True when spikes are ternary, -1, 0 or 1 (families T and TS)."""
        return self.family in ("T", "TS")

    @property
    def dual_rec(self) -> bool:
        """True when the type keeps two recurrent traces, one per sign (only where the output can be negative)."""
        return self.dual and self.recurrent and self.ternary

    @cached_property
    def params(self) -> tuple[ParamSpec, ...]:
        """Parameters in constructor order (the original 0.19.2 positional order)."""
        out: list[ParamSpec] = []

        def decay(base: str, default: float, split: bool) -> None:
            names = (f"pos_{base}", f"neg_{base}") if split else (base,)
            out.extend(ParamSpec(n, default, "sigmoid") for n in names)

        if self.synaptic:
            decay("alpha", 0.5, self.dual)
        decay("beta", 0.9, self.dual)
        if self.recurrent:
            decay("gamma", 0.9, self.dual_rec)
        if self.family == "B":
            out.append(ParamSpec("threshold", 1.0, "softplus"))
        elif self.ternary:
            out += [ParamSpec("pos_threshold", 1.0, "softplus"), ParamSpec("neg_threshold", 1.0, "softplus")]
        if self.fires:
            out.append(ParamSpec("bias", 0.0, "identity"))
        if self.family == "TS":
            out += [ParamSpec("pos_scale", 1.0, "identity"), ParamSpec("neg_scale", 1.0, "identity")]
        if self.recurrent:
            names = ("pos_rec_weight", "neg_rec_weight") if self.dual_rec else ("rec_weight",)
            out.extend(ParamSpec(n, 0.0, "identity") for n in names)
        return tuple(out)

    @cached_property
    def states(self) -> tuple[str, ...]:
        names: list[str] = []
        for base, present, split in (
            ("syn", self.synaptic, self.dual),
            ("mem", True, self.dual),
            ("rec", self.recurrent, self.dual_rec),
        ):
            if present:
                names += [f"pos_{base}", f"neg_{base}"] if split else [base]
        return tuple(names)


NAMES: tuple[str, ...] = tuple(
    f"{d}{s}{r}LI{fam}"
    for fam in ("", "EMA", "B", "T", "TS")
    for d in ("", "D")
    for s in ("", "S")
    for r in (("",) if fam in ("", "EMA") else ("", "R"))
)


def ema(h: Tensor, x: Tensor, decay: Tensor) -> Tensor:
    """``decay * h + (1 - decay) * x``, written as the fused sequence kernels compute it (bit-identical)."""
    return torch.addcmul((1 - decay) * x, decay, h)


def neuron_step(
    x: Tensor,
    state: dict[str, Tensor],
    params: dict[str, Tensor],
    spec: NeuronSpec,
    spike_fn: Callable[[Tensor], Tensor] | None = None,
    detach_reset: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One step of any of the 32 neuron types (the reference; see the module docstring for the math).

    ``state`` maps the spec's state names to tensors shaped like ``x``; ``params`` maps parameter names to
    effective values broadcastable to ``x``. Returns ``(y, new_state)``; ``y`` never shares memory with a state.
    """
    p, new = params, {}
    # S: synaptic trace
    if spec.synaptic:
        if spec.dual:
            new["pos_syn"] = ema(state["pos_syn"], x.clamp(min=0), p["pos_alpha"])
            new["neg_syn"] = ema(state["neg_syn"], x.clamp(max=0), p["neg_alpha"])
            u = new["pos_syn"] + new["neg_syn"]
        else:
            new["syn"] = u = ema(state["syn"], x, p["alpha"])
    else:
        u = x
    # R + M: drive and membrane
    if spec.dual:
        drive_pos, drive_neg = u.clamp(min=0), u.clamp(max=0)
        if spec.recurrent:
            if spec.dual_rec:
                r = state["pos_rec"] + state["neg_rec"]
                drive_pos = torch.addcmul(drive_pos, p["pos_rec_weight"], r.clamp(min=0))
                drive_neg = torch.addcmul(drive_neg, p["neg_rec_weight"], r.clamp(max=0))
            else:
                drive_pos = torch.addcmul(drive_pos, p["rec_weight"], state["rec"])
        pos_mem = _membrane(state["pos_mem"], drive_pos, p["pos_beta"], spec.ema)
        neg_mem = _membrane(state["neg_mem"], drive_neg, p["neg_beta"], spec.ema)
        m = pos_mem + neg_mem
    else:
        drive = torch.addcmul(u, p["rec_weight"], state["rec"]) if spec.recurrent else u
        m = mem = _membrane(state["mem"], drive, p["beta"], spec.ema)
    if not spec.fires:
        if spec.dual:
            new["pos_mem"], new["neg_mem"] = pos_mem, neg_mem
            return m, new
        new["mem"] = mem
        return m.clone(), new  # the output never shares memory with a state (a caller may change it in place)

    # F: firing
    f = spike_fn
    if spec.family == "B":
        s_pos = f(m - (p["threshold"] - p["bias"]))
        out = y = s_pos
    else:
        s_pos = f(m - (p["pos_threshold"] - p["bias"]))
        s_neg = f(-(p["neg_threshold"] + p["bias"]) - m)  # magnitude of the negative spike (>= 0)
        out = s_pos - s_neg
        y = out if spec.family == "T" else p["pos_scale"] * s_pos - p["neg_scale"] * s_neg
    # Z: subtractive reset by the unscaled spikes, each sign from its own branch under D
    r_pos = s_pos.detach() if detach_reset else s_pos
    thr_pos = p["threshold"] if spec.family == "B" else p["pos_threshold"]
    if spec.dual:
        new["pos_mem"] = torch.addcmul(pos_mem, r_pos, -thr_pos)
        new["neg_mem"] = neg_mem
        if spec.ternary:
            r_neg = s_neg.detach() if detach_reset else s_neg
            new["neg_mem"] = torch.addcmul(neg_mem, r_neg, p["neg_threshold"])
    else:
        mem = torch.addcmul(mem, r_pos, -thr_pos)
        if spec.ternary:
            r_neg = s_neg.detach() if detach_reset else s_neg
            mem = torch.addcmul(mem, r_neg, p["neg_threshold"])
        new["mem"] = mem
    # R: advance the recurrent trace with this step's (unscaled) output
    if spec.recurrent:
        if spec.dual_rec:
            new["pos_rec"] = ema(state["pos_rec"], out.clamp(min=0), p["pos_gamma"])
            new["neg_rec"] = ema(state["neg_rec"], out.clamp(max=0), p["neg_gamma"])
        else:
            new["rec"] = ema(state["rec"], out, p["gamma"])
    return y, new


def _membrane(mem: Tensor, drive: Tensor, beta: Tensor, is_ema: bool) -> Tensor:
    return ema(mem, drive, beta) if is_ema else torch.addcmul(drive, beta, mem)
