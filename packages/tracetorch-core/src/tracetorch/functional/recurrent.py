"""Pure step functions of the recurrent cells, in ``torch.nn``'s conventions, and their plain references.

Weights use PyTorch's layout, so they are interchangeable with ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``
(and layer 0 of ``nn.RNN``/``nn.LSTM``/``nn.GRU``): ``weight_ih [G*H, I]``, ``weight_hh [G*H, H]``,
``bias_ih``, ``bias_hh [G*H]`` with gates in torch's order (LSTM: i, f, g, o; GRU: r, z, n).

* ``*_step`` call ATen's fused cells (``torch.lstm_cell`` ...), the kernels ``nn.LSTMCell`` runs; the output
  they return is a copy of the new ``h``, never the state tensor itself (a caller may change it in place);
* ``*_step_ref`` spell out the math with basic ops: the reference the tests compare against.

Inputs are ``[batch, I]`` (any leading axes are flattened by the layers), states ``[batch, H]``.

The original traceTorch used its own gate order (i, f, o, g), one fused bias and a GRU whose update gate
weights the candidate; those weights cannot be loaded into ``torch.nn`` without permutation. We follow torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "gru_step",
    "gru_step_ref",
    "lstm_step",
    "lstm_step_ref",
    "rnn_step",
    "rnn_step_ref",
]

Weights = dict[str, Tensor]


def rnn_step(x: Tensor, state: dict[str, Tensor], w: Weights, nonlinearity: str = "tanh"):
    """Elman RNN: ``h <- act(W_ih x + b_ih + W_hh h + b_hh)``; returns ``(h, {"h": h})`` (the output a copy)."""
    cell = torch.rnn_tanh_cell if nonlinearity == "tanh" else torch.rnn_relu_cell
    h = cell(x, state["h"], w["weight_ih"], w["weight_hh"], w.get("bias_ih"), w.get("bias_hh"))
    return h.clone(), {"h": h}


def rnn_step_ref(x: Tensor, state: dict[str, Tensor], w: Weights, nonlinearity: str = "tanh"):
    pre = _affine(x, w["weight_ih"], w.get("bias_ih")) + _affine(state["h"], w["weight_hh"], w.get("bias_hh"))
    h = torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)
    return h, {"h": h}


def lstm_step(x: Tensor, state: dict[str, Tensor], w: Weights):
    """LSTM: ``i, f, g, o`` gates; ``c <- f c + i g``; ``h <- o tanh(c)``; returns ``(h, {"h", "c"})`` (the output
    a copy)."""
    h, c = torch.lstm_cell(
        x, (state["h"], state["c"]), w["weight_ih"], w["weight_hh"], w.get("bias_ih"), w.get("bias_hh")
    )
    return h.clone(), {"h": h, "c": c}


def lstm_step_ref(x: Tensor, state: dict[str, Tensor], w: Weights):
    gates = _affine(x, w["weight_ih"], w.get("bias_ih")) + _affine(state["h"], w["weight_hh"], w.get("bias_hh"))
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * state["c"] + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, {"h": h, "c": c}


def gru_step(x: Tensor, state: dict[str, Tensor], w: Weights):
    """GRU: ``r, z`` gates, ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h <- (1 - z) n + z h``; returns
    ``(h, {"h": h})`` (the output a copy)."""
    h = torch.gru_cell(x, state["h"], w["weight_ih"], w["weight_hh"], w.get("bias_ih"), w.get("bias_hh"))
    return h.clone(), {"h": h}


def gru_step_ref(x: Tensor, state: dict[str, Tensor], w: Weights):
    h = state["h"]
    gi = _affine(x, w["weight_ih"], w.get("bias_ih"))
    gh = _affine(h, w["weight_hh"], w.get("bias_hh"))
    ir, iz, inn = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(ir + hr)
    z = torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    h = (1 - z) * n + z * h
    return h, {"h": h}


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.nn.functional.linear(x, weight, bias)
