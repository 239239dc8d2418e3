"""Recurrent layers ``SimpleRNN``, ``LSTM``, ``GRU`` as ``tt.Layer``s: hidden states inside the layer,
one step per call, ``scan`` for whole sequences.

Weights follow ``torch.nn`` (layout, gate order, initialisation), so ``layer.load_state_dict(nn.LSTMCell(...)
.state_dict())`` works and numbers match ``torch.nn``. A step runs ATen's fused cell (what ``nn.LSTMCell``
runs); ``scan`` runs ATen's fused sequence op (what ``nn.LSTM`` runs: input projections batched over all
steps, the recurrence inside one native loop, no Python per step). ``tracetorch.functional.recurrent`` holds
the plain-math references the tests compare both against.

``dim=`` names the feature axis of the per-step input as for every layer: inputs ``[*, in_features, *]``
give outputs and states ``[*, out_features, *]``, with every other axis treated as batch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..features import features_back, features_last
from ..functional import recurrent as R
from ..layer import Layer, under_autocast
from ..ops import backend

__all__ = ["GRU", "LSTM", "SimpleRNN"]


class _Recurrent(Layer):
    gates: ClassVar[int]
    state_list: ClassVar[tuple[str, ...]] = ("h",)
    math_hooks = (*Layer.math_hooks, "_flat_step")  # the cell every step runs (see Layer.math_hooks)

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, dim: int = -1) -> None:
        super().__init__(out_features, dim=dim, in_features=in_features)
        g, h = self.gates, out_features
        self.out_features = out_features
        self.weight_ih = nn.Parameter(torch.empty(g * h, in_features))
        self.weight_hh = nn.Parameter(torch.empty(g * h, h))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(g * h))
            self.bias_hh = nn.Parameter(torch.empty(g * h))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        for name in self.state_list:
            self.define_state(name)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``torch.nn``'s initialisation: every weight and bias uniform in +-1/sqrt(out_features)."""
        bound = 1.0 / math.sqrt(self.out_features)
        for p in self.parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound)

    def params(self, ndim: int) -> dict[str, Tensor]:
        w = {"weight_ih": self.weight_ih, "weight_hh": self.weight_hh}
        if self.bias_ih is not None:
            w["bias_ih"], w["bias_hh"] = self.bias_ih, self.bias_hh
        return w

    # The cells work on [batch, features] (tracetorch.features)
    def _flat_state(self, t: Tensor, d: int) -> Tensor:
        """A state as the cells' ``[batch, features]``, always row-major: a stream's own states flatten to that
        without a copy, while a loaded (contiguous) one with a batch of 1 would flatten to a column-major view,
        which the matrix product rounds differently; a resumed stream then left the uninterrupted one's numbers."""
        return features_last(t, d).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """One time step. Mid-stream on ``[batch, features]`` inputs the states already fit (checked here),
        so the cell runs directly; anything else (first step, other layouts, errors) takes the general path."""
        states = self._states
        h = states["h"]
        if (
            h is not None
            and not self.reference_only
            and not backend.REFERENCE
            and not under_autocast(x)
            and x.ndim == 2
            and self.dim in (-1, 1)
            and h.shape[0] == x.shape[0]
            and x.shape[1] == self.in_features
            and h.shape[1] == self.out_features
            and h.device == x.device
            and h.dtype is x.dtype
            # autograd cannot save an inference tensor (a stream begun under inference mode): the general path
            and (
                h.requires_grad or not torch.is_grad_enabled() or torch.compiler.is_compiling() or not h.is_inference()
            )
            and all(v is not None for v in states.values())
            and not (torch.compiler.is_exporting() or torch.jit.is_tracing())  # Layer.forward refuses those
        ):
            y, new = self._flat_step(x, states, self.params(2))
            states.update(new)
            return y
        return super().forward(x)

    def step(self, x: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, Any]:
        if x.ndim == 2 and self.dim in (-1, 1):  # [batch, features]: the cells' own layout
            return self._flat_step(x, state, params)
        d = self.feature_dim(x.ndim)
        flat = {k: self._flat_state(v, d) for k, v in state.items()}
        y, new = self._flat_step(features_last(x, d), flat, params)
        shape = state["h"].shape
        return features_back(y, shape, d), {k: features_back(v, shape, d) for k, v in new.items()}

    def sequence(self, x_seq: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, Any]:
        # ATen's fused sequence op knows only the library's cells; and dynamo cannot trace it (torch.compile's
        # graph gets the step loop of the same cells instead: the same math, unrolled over T)
        if self.reference_only or backend.REFERENCE or torch.compiler.is_compiling():
            return super().sequence(x_seq, state, params)
        d = self.feature_dim(x_seq.ndim - 1)  # negative: the same axis in the sequence
        t = x_seq.shape[0]
        xs = (x_seq.movedim(d, -1) if d != -1 else x_seq).reshape(t, -1, self.in_features)
        flat = {k: self._flat_state(state[k], d) for k in self.state_list}
        if xs.is_cuda:  # cuDNN warns that our per-parameter weights are not one flat buffer, and packs them
            with warnings.catch_warnings():  # itself each call (a copy of the weights: small next to the sequence)
                warnings.filterwarnings("ignore", "RNN module weights are not part of single contiguous", UserWarning)
                out, finals = self._flat_sequence(xs, flat, params)
        else:
            out, finals = self._flat_sequence(xs, flat, params)
        shape = state["h"].shape
        y = features_back(out, torch.Size((t, *shape)), d)
        return y, {k: features_back(f, shape, d) for k, f in finals.items()}

    def _flat_step(self, x: Tensor, state: dict[str, Tensor], w: dict[str, Tensor]) -> tuple[Tensor, dict]:
        raise NotImplementedError

    def _flat_sequence(self, xs: Tensor, state: dict[str, Tensor], params: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """The whole sequence ``xs`` ``[T, batch, in]`` from ``state`` (``[batch, out]`` each) through ATen's fused
        sequence op: ``(ys [T, batch, out], final states)``."""
        hx = [state[k].unsqueeze(0) for k in self.state_list]
        out, *finals = self._aten_sequence(xs, hx, list(params.values()))
        return out, {k: f.squeeze(0) for k, f in zip(self.state_list, finals, strict=True)}

    def _aten_sequence(self, xs: Tensor, hx: list[Tensor], flat_w: list[Tensor]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _aten_args(self) -> tuple:
        # has_biases, num_layers, dropout, train, bidirectional, batch_first
        return (self.bias_ih is not None, 1, 0.0, self.training, False, False)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias_ih is not None}, dim={self.dim}"


class SimpleRNN(_Recurrent):
    """Elman RNN: ``h <- tanh(W_ih x + b_ih + W_hh h + b_hh)`` (``nonlinearity="relu"`` for ReLU).

    Args: ``in_features``, ``out_features``; keyword ``bias=True``, ``dim=-1``, ``nonlinearity="tanh"``.
    States: ``h``. Weights interchangeable with ``nn.RNNCell``.
    """

    gates = 1

    def __init__(
        self, in_features: int, out_features: int, *, bias: bool = True, dim: int = -1, nonlinearity: str = "tanh"
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"SimpleRNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(in_features, out_features, bias=bias, dim=dim)
        self.nonlinearity = nonlinearity

    def _flat_step(self, x: Tensor, state: dict[str, Tensor], w: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return R.rnn_step(x, state, w, self.nonlinearity)

    def _aten_sequence(self, xs: Tensor, hx: list[Tensor], flat_w: list[Tensor]) -> tuple[Tensor, ...]:
        op = torch.rnn_tanh if self.nonlinearity == "tanh" else torch.rnn_relu
        return op(xs, hx[0], flat_w, *self._aten_args())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTM(_Recurrent):
    """Long short-term memory: gates ``i, f, g, o``; ``c <- f c + i g``; ``h <- o tanh(c)``; output ``h``.

    Args: ``in_features``, ``out_features``; keyword ``bias=True``, ``dim=-1``.
    States: ``h``, ``c``. Weights interchangeable with ``nn.LSTMCell`` (and layer 0 of ``nn.LSTM``).
    """

    gates = 4
    state_list = ("h", "c")

    def _flat_step(self, x: Tensor, state: dict[str, Tensor], w: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return R.lstm_step(x, state, w)

    def _aten_sequence(self, xs: Tensor, hx: list[Tensor], flat_w: list[Tensor]) -> tuple[Tensor, ...]:
        return torch.lstm(xs, tuple(hx), flat_w, *self._aten_args())


class GRU(_Recurrent):
    """Gated recurrent unit (torch's formulation): ``h <- (1 - z) n + z h``.

    Args: ``in_features``, ``out_features``; keyword ``bias=True``, ``dim=-1``.
    States: ``h``. Weights interchangeable with ``nn.GRUCell`` (and layer 0 of ``nn.GRU``).
    """

    gates = 3

    def _flat_step(self, x: Tensor, state: dict[str, Tensor], w: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return R.gru_step(x, state, w)

    def _aten_sequence(self, xs: Tensor, hx: list[Tensor], flat_w: list[Tensor]) -> tuple[Tensor, ...]:
        return torch.gru(xs, hx[0], flat_w, *self._aten_args())
