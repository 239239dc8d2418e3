"""Reward-modulated learning (three-factor rules): a policy-gradient update from a scalar reward, in memory
that does not grow with time.

The model's per-step output is a vector of logits ``[B, A]``; the learner samples an action from
``softmax(logits)`` at every :meth:`RewardLearner.step` and, when a reward arrives, applies REINFORCE with a
running baseline: ``grad = -mean_b (r_b - baseline) * elig_b``, where the eligibility sums the score
functions of past actions, discounted by ``decay`` per step:

    elig_t = decay * elig_{t-1} + d log pi(a_t | x_<=t) / d theta         (only at steps that act)

(:meth:`RewardLearner.observe` advances the model without acting: the eligibility decays, nothing is added.)
``baseline <- baseline_decay * baseline + (1 - baseline_decay) * mean(r)`` is updated after its use.

Two engines compute the score functions:

* ``engine="exact"``: exact online gradients from :class:`~tracetorch.online.EligibilityUnit` (exact through
  time within each layer; across layers the current step only, as :class:`OnlineLearner`). The eligibility is
  kept per sample and per parameter (``elig_<i>`` states ``[B, *param.shape]``): with one spiking layer, or a
  chain where only stateless modules lie above each spiking layer, and ``decay=1``, the update *is* the
  REINFORCE gradient that autograd computes through the whole episode.
* ``engine="trace"`` (REFLECT, the original traceTorch's reward rule, fixed): no per-parameter eligibility;
  traces of the one-hot actions ``o <- decay o + (1 - decay) onehot(a)`` and of the log-probabilities
  ``l <- decay l + (1 - decay) log p`` (reported, not differentiated), and at reward time the
  :class:`~tracetorch.online.TraceLearner` window: ``L = -mean_b A_b sum_a o_ba log_softmax(rate)_ba``. The
  original passed the signal ``-A o`` (a derivative w.r.t. log-probabilities) into a softmax layer as if it
  were w.r.t. probabilities; here it goes through ``log_softmax`` of the rate estimate, so the update is the
  policy gradient of the rate-estimated policy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..state import Stateful
from .eligibility import EligibilityUnit
from .learner import online_plan
from .trace import TraceLearner

__all__ = ["RewardLearner"]


class RewardLearner(Stateful):
    """Policy-gradient learning from rewards, one step at a time (see the module docstring).

    ::

        learner = tt.online.RewardLearner(policy, optimizer, engine="exact", seed=0)
        tt.zero_states(learner)                    # a new episode
        for x_t in episode[:-1]:
            learner.observe(x_t)                   # no action at these steps
        a = learner.step(episode[-1])              # sample the answer [B]
        learner.reward((a == label).float())       # REINFORCE update with the running baseline

    ``learner.step(x_t, reward_t)`` does both at once (the reward then counts this step's action too).

    Args:
        model: a chain whose per-step output is ``[B, A]`` logits (for ``"exact"``: what
            :class:`OnlineLearner` accepts; for ``"trace"``: what :class:`TraceLearner` accepts).
        optimizer: stepped (then zeroed) after every reward; ``None`` leaves the update in ``.grad``.
        engine: ``"exact"`` (eligibility traces) or ``"trace"`` (REFLECT).
        decay: per-step discount of the eligibility (``"exact"``) or of the action/log-prob traces (``"trace"``).
        baseline_decay: the running reward baseline's EMA decay (``0`` would mean the last reward).
        in_trace_decay: the ``"trace"`` engine's input-trace decay (see :class:`TraceLearner`).
        seed: seed of the learner's own sampling generator (saved in ``state_dict``).

    Hidden states (zeroed per episode with ``tt.zero_states(learner)``): the model's, the engine's traces, and
    ``elig_<i>`` (``"exact"``) or ``action_trace`` / ``logp_trace`` (``"trace"``). ``state_dict`` holds the
    weights, the ``baseline`` buffer, the step count and the generator; with the optimiser's state and
    ``save_states`` a run resumes bit-exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        engine: str = "exact",
        decay: float = 1.0,
        baseline_decay: float = 0.9,
        in_trace_decay: float | list[float] = 0.9,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if engine not in ("exact", "trace"):
            raise ValueError(f"RewardLearner: engine must be 'exact' or 'trace', got {engine!r}")
        if not 0.0 <= decay <= 1.0 or not 0.0 <= baseline_decay < 1.0:
            raise ValueError("RewardLearner: decay must be in [0, 1] and baseline_decay in [0, 1)")
        if engine == "trace" and decay >= 1.0:
            raise ValueError("RewardLearner(engine='trace'): decay must be < 1 (the traces are averages)")
        self.engine = engine
        self.model = model
        self.__dict__["optimizer"] = optimizer
        self.decay = float(decay)
        self.baseline_decay = float(baseline_decay)
        ref = next(iter(model.parameters()), None)
        # the model's dtype (loaded states are cast to the dtype of a module's own parameters and buffers)
        self.register_buffer("baseline", torch.zeros((), dtype=ref.dtype if ref is not None else None))
        self.generator = torch.Generator().manual_seed(seed)
        self.num_steps = 0
        self.last_logits: Tensor | None = None
        self.last_advantage: Tensor | None = None
        if engine == "exact":
            stages = online_plan(model)
            self.units = nn.ModuleList([s for s in stages if isinstance(s, EligibilityUnit)])
            self.__dict__["_stages"] = stages
            self.__dict__["_params"] = [p for p in model.parameters() if p.requires_grad]
            for i in range(len(self._params)):
                self.define_state(f"elig_{i}")
        else:
            self.tracer = TraceLearner(model, in_trace_decay=in_trace_decay)
            self.define_state("action_trace")
            self.define_state("logp_trace")

    # -- acting ---------------------------------------------------------------------------------------------

    def _forward(self, x: Tensor, grad: bool) -> Tensor:
        if self.engine == "trace":
            return self.tracer(x)
        with torch.set_grad_enabled(grad):
            for stage in self._stages:
                x = stage(x)
        return x

    def _decay_eligibility(self) -> None:
        if self.engine == "exact":
            if self.decay != 1.0:
                for i in range(len(self._params)):
                    e = self._states[f"elig_{i}"]
                    if e is not None:
                        self._states[f"elig_{i}"] = e * self.decay
        else:
            for name in ("action_trace", "logp_trace"):
                e = self._states[name]
                if e is not None:
                    self._states[name] = e * self.decay

    @torch.no_grad()
    def observe(self, x: Tensor) -> Tensor:
        """Advance one step without acting; returns the logits ``[B, A]`` (detached)."""
        y = self._forward(x, grad=False)
        self._decay_eligibility()
        self.num_steps += 1
        self.last_logits = y.detach()
        return self.last_logits

    def step(self, x: Tensor, reward: Tensor | float | None = None, action: Tensor | None = None) -> Tensor:
        """Advance one step and act: sample ``a ~ softmax(logits)`` (or take ``action [B]``, e.g. fixed samples
        for a test), add its score function to the eligibility, then apply ``reward`` if given. Returns ``a [B]``."""
        y = self._forward(x, grad=self.engine == "exact")
        if y.ndim != 2:
            raise ValueError(f"RewardLearner: the model's per-step output must be logits [B, A], got {tuple(y.shape)}")
        logp = torch.log_softmax(y, dim=-1)
        if action is None:
            with torch.no_grad():
                action = torch.multinomial(logp.detach().exp().float(), 1, generator=self.generator).squeeze(-1)
        elif action.shape != y.shape[:1]:
            raise ValueError(f"RewardLearner: action must be [B] = {tuple(y.shape[:1])}, got {tuple(action.shape)}")
        self._decay_eligibility()
        if self.engine == "exact":
            self._add_scores(logp, action)
        else:
            with torch.no_grad():
                c = 1 - self.decay
                onehot = torch.nn.functional.one_hot(action, y.shape[-1]).to(y.dtype)
                o, lt = self.action_trace, self.logp_trace
                self.action_trace = c * onehot if o is None else o + c * onehot
                self.logp_trace = c * logp if lt is None else lt + c * logp
        self.num_steps += 1
        self.last_logits = y.detach()
        if reward is not None:
            self.reward(reward)
        return action

    def _add_scores(self, logp: Tensor, action: Tensor) -> None:
        chosen = logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)  # [B]
        b = chosen.shape[0]
        params = self._params
        if chosen.requires_grad:
            eye = torch.eye(b, dtype=chosen.dtype, device=chosen.device)
            try:
                grads = torch.autograd.grad(chosen, params, eye, is_grads_batched=True, allow_unused=True)
            except RuntimeError:  # an op without a batching rule: one backward per sample
                rows = [torch.autograd.grad(chosen[i], params, retain_graph=True, allow_unused=True) for i in range(b)]
                grads = tuple(
                    None if rows[0][j] is None else torch.stack([r[j] for r in rows]) for j in range(len(params))
                )
        else:
            grads = (None,) * len(params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                e = self._states[f"elig_{i}"]
                if e is None:
                    e = torch.zeros((b, *p.shape), dtype=p.dtype, device=p.device)
                elif e.shape[0] != b:
                    raise ValueError(
                        f"RewardLearner: batch size changed mid-episode ({e.shape[0]} -> {b}); call zero_states()"
                    )
                self._states[f"elig_{i}"] = e if g is None else e + g

    # -- learning -------------------------------------------------------------------------------------------

    def reward(self, reward: Tensor | float) -> Tensor:
        """Apply a reward (a number or ``[B]``) to the eligibility: REINFORCE with the running baseline, then
        the optimiser step and the baseline update. Returns the advantage ``[B]``."""
        r = torch.as_tensor(reward, dtype=self.baseline.dtype, device=self.baseline.device)
        b = self.batch_size()
        if r.ndim == 0:
            r = r.expand(b)
        if r.shape != (b,):
            raise ValueError(f"RewardLearner.reward: expected a number or [B] = [{b}], got {tuple(r.shape)}")
        adv = r - self.baseline
        if self.engine == "exact":
            for i, p in enumerate(self._params):
                e = self._states[f"elig_{i}"]
                if e is None:
                    continue
                a = adv.to(e.dtype).view(-1, *([1] * p.ndim))
                g = -(a * e).sum(0) / b
                p.grad = g if p.grad is None else p.grad + g
        else:
            o = self.action_trace
            if o is None:
                raise RuntimeError("RewardLearner.reward: no action taken yet in this episode")
            with torch.enable_grad():
                logp_bar = torch.log_softmax(self.tracer.window(), dim=-1)
                loss = -(adv.to(o.dtype).unsqueeze(-1) * o * logp_bar).sum() / b
                loss.backward()
        with torch.no_grad():
            self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * r.mean())
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.last_advantage = adv
        return adv

    def batch_size(self) -> int:
        """The batch size of the current episode (from the traces)."""
        t = (
            self.action_trace
            if self.engine == "trace"
            else next(
                (self._states[f"elig_{i}"] for i in range(len(self._params)) if self._states[f"elig_{i}"] is not None),
                None,
            )
        )
        if t is None:
            raise RuntimeError("RewardLearner.reward: no action taken yet in this episode")
        return t.shape[0]

    # -- resumable training state --------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        grads = [p.grad.detach().clone() if p.grad is not None else None for p in self.model.parameters()]
        return {"num_steps": self.num_steps, "generator": self.generator.get_state(), "grads": grads}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_steps = int(state["num_steps"])
        self.generator.set_state(state["generator"])
        params = list(self.model.parameters())
        if len(state["grads"]) != len(params):
            raise ValueError(f"RewardLearner: saved {len(state['grads'])} gradients for {len(params)} parameters")
        for p, g in zip(params, state["grads"], strict=True):
            p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype).clone()

    def extra_repr(self) -> str:
        return f"engine={self.engine!r}, decay={self.decay}, baseline_decay={self.baseline_decay}"
