"""Trace learning: the original traceTorch's constant-memory rule (SPEC 4.5), generalised, its bugs fixed.

No backpropagation through time and no per-parameter eligibility: during a no-grad forward every layer keeps
a decaying trace of its *input*, ``e <- d e + u`` (``d`` = ``in_trace_decay``). At update time each layer
rebuilds a one-step differentiable window from the average input that a stationary trace implies,
``i_bar = (1 - d) e``, and a *rate estimate* of its own response to that average input:

===================  ================================================================================
layer                rate estimate ``f(I)`` for the averaged drive ``I = W i_bar + b``
===================  ================================================================================
``LI``, ``D..LI``    the stationary membrane ``I / (1 - beta)`` (under ``D``: per sign, own ``beta``)
``..LIEMA``          the stationary membrane of an EMA: ``I``
``LIB`` (+ ``S``)    the original's proxy ``sigmoid(k ((1 - beta/2) I - (1 - beta)(theta - bias)))``
``LIT`` (+ ``S``)    the proxy per polarity: ``f(theta+) - f'(theta-)``; ``LITS`` scales them
``nn.Linear`` alone  ``I`` (a linear readout: the average of its output is exact)
===================  ================================================================================

(``k`` = ``slope``, 5 as in the original; a synaptic trace ``S`` is an EMA, stationary at its input, so it
adds nothing.) The loss is computed on the top layer's rate estimate and backpropagated through the window;
the signal reaching a layer's averaged input ``i_bar`` is handed to the layer below as the signal for its
rate estimate (the layer above's input *is* the layer below's output, averaged by the trace): one autograd
graph, one ``backward``. The ``LI`` estimate is exact for the time average of a linear layer's response to a
stationary input; the firing proxy is the original's heuristic, kept (documented, not derived).

Differences from the original (v0.1-v0.3), each a fix: ``in_trace_decay`` is stored as its logit and read
through a sigmoid (v0.2-v0.3 stored 0.9 raw, so the effective decay was sigmoid(0.9) = 0.711); inputs have
a batch axis; the traces are hidden states (zero/save/load with the model's); an external optimiser; any
chain of ``nn.Linear`` + spiking layers + stateless modules. Recurrent (``R``) types and dual (``D``) firing
types have no rate estimate here and raise :class:`~tracetorch.online.UnsupportedLayerError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..snn.layers import SpikingLayer
from ..state import Stateful, named_stateful
from .learner import UnsupportedLayerError, _flatten

__all__ = ["TraceLearner", "TraceUnit", "rate_estimate"]


def rate_estimate(layer: SpikingLayer, drive: Tensor, slope: float = 5.0) -> Tensor:
    """Differentiable rate estimate of ``layer``'s output for a constant drive ``drive [*, N]`` (see the table
    in the module docstring); gradients flow to ``drive`` and to the layer's parameters."""
    spec = layer.spec
    if spec.recurrent:
        raise UnsupportedLayerError(
            f"trace learning has no rate estimate for the recurrent type {spec.name} (its output feeds back "
            "into its drive); use OnlineLearner (exact eligibility traces) or BPTT"
        )
    if spec.dual and spec.fires:
        raise UnsupportedLayerError(
            f"trace learning has no rate estimate for the dual firing type {spec.name}; use OnlineLearner or BPTT"
        )
    p = layer.params(drive.ndim)
    if not spec.fires:
        if spec.ema:
            return drive
        if spec.dual:
            return drive.clamp(min=0) / (1 - p["pos_beta"]) + drive.clamp(max=0) / (1 - p["neg_beta"])
        return drive / (1 - p["beta"])
    beta, bias = p["beta"], p["bias"]
    lead = (1 - beta / 2) * drive

    def proxy(v: Tensor, thr: Tensor) -> Tensor:
        return torch.sigmoid(slope * (v - (1 - beta) * thr))

    if spec.family == "B":
        return proxy(lead, p["threshold"] - bias)
    pos = proxy(lead, p["pos_threshold"] - bias)
    neg = proxy(-lead, p["neg_threshold"] + bias)
    if spec.family == "TS":
        return p["pos_scale"] * pos - p["neg_scale"] * neg
    return pos - neg


class TraceUnit(Stateful):
    """One stage of trace learning: an optional ``nn.Linear`` and an optional spiking layer after it.

    Args:
        layer: a non-recurrent spiking layer (non-dual for firing types), or ``None`` for a lone linear.
        linear: the ``nn.Linear`` feeding it (``dim=-1``), or ``None``.
        in_trace_decay: ``d`` in ``e <- d e + u``, in (0, 1); stored as its logit (the original's bug fixed).
        learn_in_trace_decay: make ``d`` a parameter. Off by default: the window's gradient w.r.t. ``d`` only
            rescales the average ``(1 - d) e`` and knows nothing of how the trace itself would change.
        slope: ``k`` of the firing proxy.

    Hidden state ``in_trace`` ``[*, M]`` (the input's shape). The layer and linear belong to the model.
    """

    def __init__(
        self,
        layer: SpikingLayer | None,
        linear: nn.Linear | None = None,
        in_trace_decay: float = 0.9,
        learn_in_trace_decay: bool = False,
        slope: float = 5.0,
    ) -> None:
        super().__init__()
        if layer is None and linear is None:
            raise ValueError("TraceUnit needs a spiking layer, an nn.Linear, or both")
        if layer is not None:
            rate_estimate(layer, torch.zeros(layer.num_neurons, dtype=layer.raw(layer.parameter_names[0]).dtype))
            if linear is not None and layer.dim != -1:
                raise ValueError(f"TraceUnit: an nn.Linear can feed only a dim=-1 layer, got dim={layer.dim}")
        if not 0.0 < float(in_trace_decay) < 1.0:
            raise ValueError(f"TraceUnit: in_trace_decay must be in (0, 1), got {in_trace_decay!r}")
        self.__dict__["_layer"] = layer
        self.__dict__["_linear"] = linear
        # the model's dtype: loaded states are cast to the dtype of a module's own parameters and buffers
        ref = linear.weight if linear is not None else layer.raw(layer.parameter_names[0])
        raw = torch.logit(torch.tensor(float(in_trace_decay), dtype=torch.float64)).to(ref.dtype)
        if learn_in_trace_decay:
            self.raw_in_trace_decay = nn.Parameter(raw)
        else:
            self.register_buffer("raw_in_trace_decay", raw)
        self.slope = float(slope)
        self.define_state("in_trace")

    @property
    def layer(self) -> SpikingLayer | None:
        """The spiking layer this unit learns for (``None`` for a unit of a linear layer alone)."""
        return self._layer

    @property
    def linear(self) -> nn.Linear | None:
        """The ``nn.Linear`` that feeds the layer, if the unit bundles one."""
        return self._linear

    @property
    def in_trace_decay(self) -> Tensor:
        """The effective decay ``sigmoid(raw)`` (0-d)."""
        return torch.sigmoid(self.raw_in_trace_decay)

    def forward(self, u: Tensor) -> Tensor:
        """One step without autograd: advance the input trace, then the linear and the layer."""
        with torch.no_grad():
            layer = self._layer
            if layer is not None and any(s is None for s in layer._states.values()):
                self.in_trace = None  # the model starts a new stream (zero_states on it): so does the trace
            e = self.in_trace
            d = self.in_trace_decay.to(u.dtype)
            if e is None:
                e = u.clone()
            elif e.shape != u.shape:
                raise ValueError(
                    f"TraceUnit: input shape {tuple(u.shape)} differs from the trace's {tuple(e.shape)} mid-stream; "
                    "call zero_states() to start a new stream"
                )
            else:
                e = torch.addcmul(u, d, e)
            self.in_trace = e
            x = self._linear(u) if self._linear is not None else u
            return layer(x) if layer is not None else x

    def input_rate(self) -> Tensor:
        """``i_bar = (1 - d) e [*, M]``: the average input a stationary trace implies (differentiable in ``d``)."""
        if self.in_trace is None:
            raise RuntimeError("TraceUnit: no trace yet; run at least one step before learning")
        return (1 - self.in_trace_decay) * self.in_trace

    def rate(self, i_bar: Tensor) -> Tensor:
        """Rate estimate of this stage's output for the average input ``i_bar`` (differentiable)."""
        drive = self._linear(i_bar) if self._linear is not None else i_bar
        return rate_estimate(self._layer, drive, self.slope) if self._layer is not None else drive

    def extra_repr(self) -> str:
        parts = [type(m).__name__ for m in (self._linear, self._layer) if m is not None]
        return f"{' -> '.join(parts)}, in_trace_decay={self.in_trace_decay.item():.4g}"


def trace_plan(
    model: nn.Module, in_trace_decay: float | list[float], learn_in_trace_decay: bool, slope: float
) -> list[nn.Module]:
    """Stages of ``model`` for trace learning: a :class:`TraceUnit` per (``nn.Linear``,) spiking layer pair and
    per lone ``nn.Linear``; other stateless modules as they are."""
    mods = _flatten(model)
    stages: list[nn.Module] = []
    i = 0
    n_units = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Linear) and isinstance(nxt, SpikingLayer) and nxt.dim == -1:
            stages.append((nxt, m))
            i += 2
        elif isinstance(m, SpikingLayer):
            stages.append((m, None))
            i += 1
        elif isinstance(m, nn.Linear):
            stages.append((None, m))
            i += 1
        elif next(iter(named_stateful(m)), None) is None:
            stages.append(m)
            i += 1
        else:
            raise UnsupportedLayerError(
                f"trace learning cannot handle {type(m).__name__}: it has hidden states but is not a spiking layer. "
                "Supported: nn.Linear, non-recurrent spiking layers of tt.snn (LI, LIB, LIT, ... families; dual only "
                "for LI), stateless modules."
            )
        if isinstance(stages[-1], tuple):
            n_units += 1
    decays = in_trace_decay if isinstance(in_trace_decay, (list, tuple)) else [in_trace_decay] * n_units
    if len(decays) != n_units:
        raise ValueError(f"trace learning: {len(decays)} in_trace_decay values for {n_units} trace units")
    out: list[nn.Module] = []
    k = 0
    for s in stages:
        if isinstance(s, tuple):
            out.append(TraceUnit(s[0], s[1], float(decays[k]), learn_in_trace_decay, slope))
            k += 1
        else:
            out.append(s)
    if not k:
        raise ValueError("trace learning: the model has no nn.Linear or spiking layer")
    return out


class TraceLearner(Stateful):
    """Trace learning (the original traceTorch rule, generalised; see the module docstring).

    ::

        learner = tt.online.TraceLearner(model, optimizer, nn.functional.cross_entropy, in_trace_decay=0.999)
        for x_t in stream[:-1]:
            learner.step(x_t)                 # no-grad forward; traces advance
        learner.step(stream[-1], target)      # forward, then one update from the window

    Args:
        model: a chain (``tt.Model(...)``, ``nn.Sequential``, one layer) of ``nn.Linear``, non-recurrent spiking
            layers and stateless modules. Registered as ``learner.model``.
        optimizer: stepped (then zeroed) after each :meth:`learn`; ``None`` leaves the gradients in ``.grad``.
        loss_fn: ``loss_fn(rate, target) -> scalar`` on the top stage's rate estimate ``[B, K]``.
        in_trace_decay: one ``d`` for every unit, or a list (one per unit, bottom first).
        learn_in_trace_decay, slope: see :class:`TraceUnit`.

    Hidden states: the model's and each unit's ``in_trace`` (``units.<i>.in_trace``), all shaped by the
    input, never by the number of steps. ``state_dict`` holds the model's weights and the decays.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Callable[..., Tensor] | None = None,
        in_trace_decay: float | list[float] = 0.9,
        learn_in_trace_decay: bool = False,
        slope: float = 5.0,
    ) -> None:
        super().__init__()
        self.model = model
        stages = trace_plan(model, in_trace_decay, learn_in_trace_decay, slope)
        self.units = nn.ModuleList([s for s in stages if isinstance(s, TraceUnit)])
        self.__dict__["_stages"] = stages
        self.__dict__["optimizer"] = optimizer
        self.loss_fn = loss_fn
        self.num_updates = 0
        self.last_loss: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """One step without autograd ``x [B, ...] -> y``; every unit's trace advances."""
        with torch.no_grad():
            for stage in self._stages:
                x = stage(x)
        return x

    def window(self) -> Tensor:
        """The differentiable one-step window: the top stage's rate estimate ``[B, K]`` built from the traces.

        Each unit's value comes from its own trace; the gradient w.r.t. its averaged input is passed to the
        stage below as the gradient w.r.t. that stage's rate estimate (straight through).
        """
        z: Tensor | None = None
        for stage in self._stages:
            if isinstance(stage, TraceUnit):
                i_bar = stage.input_rate()
                if z is not None:
                    i_bar = i_bar + (z - z.detach())  # value: this unit's trace; gradient: to the stage below
                z = stage.rate(i_bar)
            elif z is not None:
                z = stage(z)
        assert z is not None
        return z

    def learn(self, target: Any = None, loss_fn: Callable[..., Tensor] | None = None) -> Tensor:
        """Build the window, backpropagate ``loss_fn(rate, target)`` (``loss_fn(rate)`` without a target),
        then step the optimiser. Returns the loss (detached)."""
        fn = loss_fn if loss_fn is not None else self.loss_fn
        if fn is None:
            raise ValueError("TraceLearner.learn needs a loss: pass loss_fn= here or to TraceLearner(...)")
        with torch.enable_grad():
            rate = self.window()
            loss = fn(rate) if target is None else fn(rate, target)
            if not isinstance(loss, Tensor) or loss.ndim != 0:
                raise ValueError("TraceLearner: the loss must be a scalar tensor")
            loss.backward()
        self.last_loss = loss.detach()
        self.num_updates += 1
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return self.last_loss

    def step(self, x: Tensor, target: Any = None, loss_fn: Callable[..., Tensor] | None = None) -> Tensor:
        """Forward one step (no autograd); with a ``target``, then :meth:`learn` from the traces. Returns ``y``."""
        y = self(x)
        if target is not None:
            self.learn(target, loss_fn)
        return y

    def get_extra_state(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])

    def extra_repr(self) -> str:
        return f"num_updates={self.num_updates}"
