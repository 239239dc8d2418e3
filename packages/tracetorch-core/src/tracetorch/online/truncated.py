"""``TruncatedLearner``: online learning for *any* stateful model, in memory that does not grow with time.

::

    learner = tt.online.TruncatedLearner(model, optimizer, loss_fn=F.cross_entropy, window=128)
    for x_t, target_t in stream:            # one step at a time, forever
        y_t = learner.step(x_t, target_t)   # predicts with the current weights; learns every 128 steps

    y_seq = learner.learn(x_seq, target_seq)  # the same numbers, a window at a time through ``model.scan``

Truncated backpropagation through time over consecutive windows of ``window`` steps (TBPTT(k, k)): every step is
predicted with the weights of the moment (streaming, no autograd graph kept); at the end of each window the window
is replayed from the hidden states it started from with ``model.scan``, the mean of its per-step losses is
backpropagated through the whole window and the optimizer steps; the states then carry on, detached. Memory is
``O(window)`` whatever the length of the stream, and gradients never cross a window boundary (the price of
constant memory; :class:`~tracetorch.online.OnlineLearner` carries them exactly through all of the past, but only
for element-wise recurrences).

Unlike :class:`~tracetorch.online.OnlineLearner` this works for every model with hidden states: LSTMs, GRUs,
Mamba, custom ``tt.Model`` forwards. Use it where exact online gradients are not available.

The learner's hidden states are the model's plus the window in progress (its inputs, targets and the states it
started from), so ``learner.save_states(path)`` / ``learner.load_states(path)`` stop and resume a stream at any
step, and ``tt.zero_states(learner)`` starts a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..state import Stateful, detach_states, get_states
from ..state_io import load_states

__all__ = ["TruncatedLearner"]


class _Window(Stateful):
    """The window in progress: ``inputs`` ``[n, ...]``, ``targets`` ``[n, ...]`` (any dtype) and ``start_<i>``,
    the model's ``i``-th hidden state when the window began."""

    def __init__(self, num_model_states: int) -> None:
        super().__init__()
        self.define_state("inputs")
        self.define_state("targets")
        for i in range(num_model_states):
            self.define_state(f"start_{i}")

    def check_state_tensor(self, name: str, value: Tensor) -> str | None:
        if name in ("inputs", "targets"):
            return None  # token ids, class labels: any dtype
        return super().check_state_tensor(name, value)

    def __len__(self) -> int:
        x = self._states["inputs"]
        return 0 if x is None else x.shape[0]


class TruncatedLearner(Stateful):
    """Constant-memory online learning by truncated BPTT over windows (see the module docstring).

    Args:
        model: any module with hidden states (``tt.Layer``, ``tt.Model``, ``nn.Sequential`` of them...). Its
            ``scan`` replays a window when it has one; otherwise the window is replayed step by step.
        optimizer: stepped (then ``zero_grad``) at the end of every window; ``None`` leaves the gradients of
            the last window in ``.grad``.
        loss_fn: ``loss_fn(output_t, target_t) -> scalar`` (``loss_fn(output_t)`` without targets), one step's
            loss; a window's loss is the mean over its steps.
        window: steps per window (the truncation length and the update period).
        clip_grad_norm: clip the gradients' global norm to this before each optimizer step (``None``: no clip).

    ``learner.last_loss`` is the last finished window's loss; ``num_steps`` and ``num_updates`` count steps and
    windows. ``learner.state_dict()`` holds the model's weights and the counters; with the optimizer's own
    ``state_dict`` and ``learner.save_states`` that resumes a stream bit-exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: Callable[..., Tensor] | None = None,
        window: int = 64,
        clip_grad_norm: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"TruncatedLearner: window must be a positive int, got {window!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"TruncatedLearner: clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
        keys = list(get_states(model))
        if not keys:
            raise ValueError(
                f"TruncatedLearner: {type(model).__name__} has no hidden states; train it with a plain loop"
            )
        self.model = model
        self.__dict__["_keys"] = keys
        self.buffer = _Window(len(keys))
        self.__dict__["optimizer"] = optimizer
        self.loss_fn = loss_fn
        self.window = window
        self.clip_grad_norm = clip_grad_norm
        self.num_steps = 0
        self.num_updates = 0
        self.last_loss: Tensor | None = None
        self.__dict__["_bufs"] = {}

    # -- the two ways in ----------------------------------------------------------------------------------------

    def step(self, x: Tensor, target: Any = None, loss_fn: Callable[..., Tensor] | None = None) -> Tensor:
        """One time step: the model's output for ``x`` with the current weights (detached). Ends the window
        (replay, backward, optimizer step) when this is its ``window``-th step."""
        fn = self._loss_fn(loss_fn)
        if len(self.buffer) == 0:
            self._begin()
        with torch.no_grad():
            y = self.model(x)
        self._push("inputs", x)
        if target is not None:
            if len(self.buffer) > 1 and self.buffer.targets is None:
                raise ValueError("TruncatedLearner.step: a target in the middle of a window that had none")
            self._push("targets", torch.as_tensor(target))
        elif self.buffer.targets is not None:
            raise ValueError("TruncatedLearner.step: no target in the middle of a window that had targets")
        self.num_steps += 1
        if len(self.buffer) == self.window:
            self._finish(fn)
        return y

    def learn(self, x_seq: Tensor, target_seq: Any = None, loss_fn: Callable[..., Tensor] | None = None) -> Tensor:
        """``step`` over ``x_seq`` (time first), fast: whole windows go through ``model.scan`` once, with the
        same numbers as stepping. Returns the outputs ``[T, ...]`` (detached)."""
        fn = self._loss_fn(loss_fn)
        if target_seq is not None:
            target_seq = torch.as_tensor(target_seq)
            if target_seq.shape[0] != x_seq.shape[0]:
                raise ValueError(
                    f"TruncatedLearner.learn: {x_seq.shape[0]} inputs but {target_seq.shape[0]} targets (time first)"
                )
        outs: list[Tensor] = []
        t, n = 0, x_seq.shape[0]
        while t < n:
            if len(self.buffer) == 0 and n - t >= self.window and _has_scan(self.model):
                tgt = None if target_seq is None else target_seq[t : t + self.window]
                detach_states(self.model)  # the window starts from constants, as a replay from _begin's copies would
                y = self._update(x_seq[t : t + self.window], tgt, fn)  # from the live states, as _begin would
                outs.append(y)
                self.num_steps += self.window
                t += self.window
            else:
                outs.append(self.step(x_seq[t], None if target_seq is None else target_seq[t], loss_fn).unsqueeze(0))
                t += 1
        if not outs:
            raise ValueError("TruncatedLearner.learn: x_seq has no time steps")
        return torch.cat(outs)

    def forward(self, x: Tensor) -> Tensor:
        raise TypeError("TruncatedLearner: use learner.step(x, target) or learner.learn(x_seq, target_seq)")

    # -- the window ----------------------------------------------------------------------------------------------

    def _loss_fn(self, loss_fn: Callable[..., Tensor] | None) -> Callable[..., Tensor]:
        fn = loss_fn if loss_fn is not None else self.loss_fn
        if fn is None:
            raise ValueError("TruncatedLearner needs a loss: pass loss_fn= here or to TruncatedLearner(...)")
        return fn

    def _begin(self) -> None:
        """Remember the states the window starts from (copies: streaming fast paths reuse their buffers)."""
        for i, v in enumerate(get_states(self.model).values()):
            self.buffer._states[f"start_{i}"] = None if v is None else v.detach().clone()

    def _push(self, name: str, v: Tensor) -> None:
        """Append ``v`` to the window's ``name`` states (a view into a preallocated ``[window, ...]`` buffer)."""
        cur = self.buffer._states[name]
        n = 0 if cur is None else cur.shape[0]
        buf = self._bufs.get(name)
        fits = buf is not None and buf.shape[1:] == v.shape and buf.dtype == v.dtype and buf.device == v.device
        if not (fits and (cur is None or cur.data_ptr() == buf.data_ptr()) and n < buf.shape[0]):
            if cur is not None and (cur.shape[1:] != v.shape or cur.dtype != v.dtype):
                raise ValueError(
                    f"TruncatedLearner: step {n} of the window has {name} of shape {tuple(v.shape)} "
                    f"({v.dtype}), the window's earlier steps {tuple(cur.shape[1:])} ({cur.dtype})"
                )
            buf = self._bufs[name] = v.new_empty((max(self.window, n + 1), *v.shape))
            if n:
                buf[:n].copy_(cur)
        buf[n].copy_(v.detach())
        self.buffer._states[name] = buf[: n + 1]

    def _finish(self, fn: Callable[..., Tensor]) -> None:
        """Replay the window from its start states with gradients, learn, and carry on from its end."""
        starts = [self.buffer._states[f"start_{i}"] for i in range(len(self._keys))]
        load_states(self.model, dict(zip(self._keys, starts, strict=True)))
        x, tgt = self.buffer.inputs, self.buffer.targets
        for name in self.buffer._states:
            self.buffer._states[name] = None
        self._update(x, tgt, fn)

    def _update(self, x: Tensor, tgt: Tensor | None, fn: Callable[..., Tensor]) -> Tensor:
        """Run ``x`` (a window) from the model's current states with gradients, backpropagate the mean step loss,
        step the optimizer, detach the states. Returns the outputs (detached)."""
        with torch.enable_grad():
            y = self.model.scan(x) if _has_scan(self.model) else torch.stack([self.model(x_t) for x_t in x])
            losses = [fn(y[t]) if tgt is None else fn(y[t], tgt[t]) for t in range(x.shape[0])]
            for loss in losses[:1]:
                if not isinstance(loss, Tensor) or loss.ndim != 0:
                    raise ValueError(f"TruncatedLearner: the loss must be a scalar tensor, got {loss!r:.80}")
            loss = torch.stack(losses).mean()
            if loss.requires_grad:
                loss.backward()
        self.last_loss = loss.detach()
        self.num_updates += 1
        if self.optimizer is not None:
            if self.clip_grad_norm is not None:
                params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        detach_states(self.model)
        return y.detach()

    # -- resumable training state --------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        """Saved in ``state_dict``: the step and update counts."""
        return {"num_steps": self.num_steps, "num_updates": self.num_updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_steps = int(state["num_steps"])
        self.num_updates = int(state["num_updates"])

    def extra_repr(self) -> str:
        return f"window={self.window}, num_steps={self.num_steps}, num_updates={self.num_updates}"


def _has_scan(model: nn.Module) -> bool:
    return callable(getattr(model, "scan", None))
