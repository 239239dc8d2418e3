"""``OnlineLearner``: train a stateful model one time step at a time, in memory that does not grow with time.

::

    learner = tt.online.OnlineLearner(model, optimizer, loss_fn=nn.functional.mse_loss, update_every=4)
    for x_t, target_t in stream:          # x_t [B, M], target_t [B, K]
        y_t = learner.step(x_t, target_t)  # forward, loss, backward; optimizer.step() every 4th call

or, for a loss of your own, ``y_t = learner(x_t)``; ``loss(y_t).backward()`` fills ``.grad`` with the online
gradients; step the optimizer yourself.

The model is a chain (``tt.Model(...)``, ``nn.Sequential``, or one layer) of spiking layers from
:mod:`tracetorch.snn` (each optionally fed by an ``nn.Linear``, bundled so that its weight is traced too) and
stateless modules. Every spiking layer becomes an :class:`~tracetorch.online.EligibilityUnit`: its own
parameters (and the bundled linear's) get exact gradients through the whole past; across layers only the
current step's gradient is passed down (see ``eligibility.py``). With one spiking layer, or several where only
stateless modules lie above each, every gradient equals BPTT's for the summed per-step losses over the
window (while the parameters stay fixed inside it; an update between steps makes the traces, computed with
the old parameters, the usual RTRL approximation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..functional.spiking import NAMES
from ..model import Model
from ..snn.layers import SpikingLayer
from ..state import Stateful, named_stateful
from .eligibility import EligibilityUnit

__all__ = ["OnlineLearner", "UnsupportedLayerError", "online_plan"]

SUPPORTED = (
    "the 32 spiking layers of tt.snn (" + ", ".join(NAMES) + "), each optionally preceded by an nn.Linear, "
    "and stateless modules (no hidden state inside)"
)

_WHY = {
    "LSTM": "its recurrent weight matrix mixes neurons, so exact online gradients would cost O(N^4) per step",
    "GRU": "its recurrent weight matrix mixes neurons, so exact online gradients would cost O(N^4) per step",
    "SimpleRNN": "its recurrent weight matrix mixes neurons, so exact online gradients would cost O(N^4) per step",
    "S6": "its decay depends on the input through a projection (not yet traced)",
    "Mamba": "its decay depends on the input through a projection and it mixes channels (not yet traced)",
    "S4D": "complex diagonal SSMs are not traced yet",
}


class UnsupportedLayerError(TypeError):
    """A module in the chain has hidden states that ``tt.online`` cannot trace exactly."""


def online_plan(model: nn.Module, bundle_linear: bool = True) -> list[nn.Module]:
    """The per-step stages of ``model`` for online learning: stateless modules as they are, and an
    :class:`EligibilityUnit` for every spiking layer (with the ``nn.Linear`` just before it when
    ``bundle_linear``). Raises :class:`UnsupportedLayerError` for anything else with hidden states."""
    stages: list[nn.Module] = []
    for m in _flatten(model):
        if isinstance(m, SpikingLayer):
            prev = stages[-1] if stages else None
            if (
                bundle_linear
                and isinstance(prev, nn.Linear)
                and m.dim == -1
                and prev.out_features == m.num_neurons
                and any(p.requires_grad for p in prev.parameters())
            ):
                stages[-1] = EligibilityUnit(m, prev)
            else:
                stages.append(EligibilityUnit(m))
        elif next(iter(named_stateful(m)), None) is None:
            stages.append(m)
        else:
            name = type(m).__name__
            why = _WHY.get(name, "it is not an element-wise recurrence that tt.online knows")
            raise UnsupportedLayerError(
                f"tt.online cannot compute exact online gradients for {name}: {why}. Supported: {SUPPORTED}. "
                "Learn online with tt.online.TruncatedLearner (truncated BPTT in windows, constant memory), or "
                "train with BPTT (model.scan)."
            )
    if not stages:
        raise ValueError("OnlineLearner: the model has no modules")
    return stages


def _flatten(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, SpikingLayer):
        return [model]
    if isinstance(model, nn.Sequential) or (isinstance(model, Model) and model.is_chain):
        out: list[nn.Module] = []
        for m in model.children():
            out += _flatten(m)
        return out
    stateful = isinstance(model, Stateful) or next(iter(named_stateful(model)), None) is not None
    if stateful and (isinstance(model, Model) or not hasattr(model, "step")):
        raise UnsupportedLayerError(
            f"OnlineLearner needs a chain (tt.Model(...), nn.Sequential) or a single layer; "
            f"{type(model).__name__} has a custom forward with hidden states inside, whose data flow between "
            f"layers cannot be traced. Supported: {SUPPORTED}."
        )
    return [model]


class OnlineLearner(Stateful):
    """Constant-memory online learning with exact per-layer gradients (see the module docstring).

    Args:
        model: a chain of spiking layers, ``nn.Linear``s and stateless modules (``tt.Model(...)``,
            ``nn.Sequential``, or a single spiking layer). It is registered as ``learner.model``.
        optimizer: stepped (then ``zero_grad``) every ``update_every`` calls of :meth:`step`; ``None`` only
            accumulates gradients in ``.grad``.
        loss_fn: ``loss_fn(output, target) -> scalar``, used by :meth:`step` when a target is given.
        update_every: number of steps whose gradients are summed before each optimizer step.
        bundle_linear: trace an ``nn.Linear`` that feeds a spiking layer exactly (memory ``k * B * N * M`` per
            layer); ``False`` gives it only the current step's gradient.

    Hidden states: the model's, plus the eligibility traces (``units.<i>.<state>__<param>``), so
    ``tt.zero_states(learner)`` starts a new stream and ``learner.save_states(path)`` /
    ``learner.load_states(path)`` stop and resume one. ``learner.state_dict()`` holds the model's weights,
    the step count and the gradients accumulated since the last update; with the optimizer's own
    ``state_dict`` that resumes training bit-exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Callable[..., Tensor] | None = None,
        update_every: int = 1,
        bundle_linear: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"OnlineLearner: update_every must be a positive int, got {update_every!r}")
        self.model = model
        stages = online_plan(model, bundle_linear)
        self.units = nn.ModuleList([s for s in stages if isinstance(s, EligibilityUnit)])
        self.__dict__["_stages"] = stages  # plain list: the stateless modules belong to the model
        self.__dict__["optimizer"] = optimizer
        self.loss_fn = loss_fn
        self.update_every = update_every
        self.num_steps = 0
        self.last_loss: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """One time step ``x [B, ...] -> y``; ``y``'s graph covers this step only, and its backward gives the
        online gradients (exact through time within each layer)."""
        for stage in self._stages:
            x = stage(x)
        return x

    def step(self, x: Tensor, target: Any = None, loss_fn: Callable[..., Tensor] | None = None) -> Tensor:
        """Forward one step, backpropagate this step's loss, and update every ``update_every`` steps.

        The loss is ``loss_fn(y, target)`` (``loss_fn(y)`` when ``target`` is None); ``loss_fn`` defaults to the
        one given at construction. Returns ``y`` (detached); the loss is kept in ``learner.last_loss``.
        """
        fn = loss_fn if loss_fn is not None else self.loss_fn
        if fn is None:
            raise ValueError("OnlineLearner.step needs a loss: pass loss_fn= here or to OnlineLearner(...)")
        y = self(x)
        loss = fn(y) if target is None else fn(y, target)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise ValueError(f"OnlineLearner.step: the loss must be a scalar tensor, got {_describe(loss)}")
        if loss.requires_grad:
            loss.backward()
        self.last_loss = loss.detach()
        self.num_steps += 1
        if self.num_steps % self.update_every == 0:
            self.update()
        return y.detach()

    def update(self) -> None:
        """Apply the accumulated gradients now (``optimizer.step()`` then ``optimizer.zero_grad()``)."""
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    # -- resumable training state --------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """Saved in ``state_dict``: the step count and the model's pending (not yet applied) gradients."""
        grads = [p.grad.detach().clone() if p.grad is not None else None for p in self.model.parameters()]
        return {"num_steps": self.num_steps, "grads": grads}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved (the pending gradients go back into ``.grad``)."""
        params = list(self.model.parameters())
        grads = state["grads"]
        if len(grads) != len(params):
            raise ValueError(f"OnlineLearner: saved {len(grads)} pending gradients for {len(params)} parameters")
        self.num_steps = int(state["num_steps"])
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype).clone()

    def extra_repr(self) -> str:
        return f"update_every={self.update_every}, num_steps={self.num_steps}"


def _describe(v: Any) -> str:
    return f"a tensor of shape {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
