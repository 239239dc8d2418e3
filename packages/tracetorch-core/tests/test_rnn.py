"""Recurrent layers: fused cells == plain-math references; scan (fused sequence op) == step loop (outputs,
final states, gradients incl. initial state); torch.nn interchangeability; layouts."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_run, run
from torch import nn

import tracetorch as tt
from tracetorch import rnn
from tracetorch.functional import recurrent as R

DT = torch.float64
KINDS = {
    "rnn-tanh": (lambda i, o, **kw: rnn.SimpleRNN(i, o, **kw), ("h",)),
    "rnn-relu": (lambda i, o, **kw: rnn.SimpleRNN(i, o, nonlinearity="relu", **kw), ("h",)),
    "lstm": (lambda i, o, **kw: rnn.LSTM(i, o, **kw), ("h", "c")),
    "gru": (lambda i, o, **kw: rnn.GRU(i, o, **kw), ("h",)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_fused_cell_matches_reference_math(kind, bias):
    make, states = KINDS[kind]
    layer = make(5, 7, bias=bias).double()
    x = torch.randn(3, 5, dtype=DT, requires_grad=True)
    st = {s: torch.randn(3, 7, dtype=DT, requires_grad=True) for s in states}
    w = layer.params(2)
    ref = {"rnn-tanh": R.rnn_step_ref, "rnn-relu": R.rnn_step_ref, "lstm": R.lstm_step_ref, "gru": R.gru_step_ref}
    extra = {"nonlinearity": "relu"} if kind == "rnn-relu" else {}
    y_fused, s_fused = layer._flat_step(x, st, w)
    y_ref, s_ref = ref[kind](x, st, w, **extra)
    torch.testing.assert_close(y_fused, y_ref, rtol=1e-12, atol=1e-12)
    for k in states:
        torch.testing.assert_close(s_fused[k], s_ref[k], rtol=1e-12, atol=1e-12)
    inputs = [x, *st.values(), *w.values()]
    loss_f = y_fused.sum() + sum(v.pow(2).sum() for v in s_fused.values())
    loss_r = y_ref.sum() + sum(v.pow(2).sum() for v in s_ref.values())
    for gf, gr in zip(torch.autograd.grad(loss_f, inputs), torch.autograd.grad(loss_r, inputs), strict=True):
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["dense", "conv", "unbatched"])
def test_scan_equals_step_loop(kind, layout):
    make, states = KINDS[kind]
    dim = -3 if layout == "conv" else -1
    layer = make(4, 6, dim=dim).double()
    step_shape = {"dense": (3, 4), "conv": (2, 4, 3, 2), "unbatched": (4,)}[layout]
    state_shape = {"dense": (3, 6), "conv": (2, 6, 3, 2), "unbatched": (6,)}[layout]
    x = torch.randn(11, *step_shape, dtype=DT)
    initial = {s: torch.randn(state_shape, dtype=DT) * 0.5 for s in states}
    a = run(layer, x, initial, "scan")
    b = run(layer, x, initial, "steps")
    assert a[0].shape == (11, *state_shape)
    assert_same_run(a, b, exact_outputs=False, rtol=1e-10, atol=1e-12)
    assert_same_run(run(layer, x, None, "scan"), run(layer, x, None, "steps"), exact_outputs=False, rtol=1e-10,
                    atol=1e-12)  # fmt: skip


def test_weights_are_interchangeable_with_torch_nn():
    torch.manual_seed(0)
    for ours, cell, full in [
        (rnn.LSTM(5, 8), nn.LSTMCell(5, 8), nn.LSTM(5, 8)),
        (rnn.GRU(5, 8), nn.GRUCell(5, 8), nn.GRU(5, 8)),
        (rnn.SimpleRNN(5, 8), nn.RNNCell(5, 8), nn.RNN(5, 8)),
    ]:
        ours.load_state_dict(cell.state_dict())
        full.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
        x = torch.randn(20, 3, 5)
        y_full, _ = full(x)
        torch.testing.assert_close(ours.scan(x), y_full)
        ours.zero_states()
        hx = None
        for xt in x.unbind(0):
            hx = cell(xt, hx)
            y = ours(xt)
            torch.testing.assert_close(y, hx[0] if isinstance(hx, tuple) else hx)


def test_lstm_in_a_model_truncated_bptt_and_errors():
    model = tt.Model(nn.Linear(3, 8), rnn.LSTM(8, 8), nn.Linear(8, 2))
    x = torch.randn(30, 4, 3, requires_grad=True)
    model.scan(x[:15])
    model.detach_states()
    model.scan(x[15:]).sum().backward()
    assert x.grad[:15].abs().sum() == 0 and x.grad[15:].abs().sum() > 0
    assert set(model.get_states()) == {"1.h", "1.c"}
    with pytest.raises(ValueError, match="expects 8 features"):
        rnn.LSTM(8, 8)(torch.randn(2, 5))
    with pytest.raises(tt.StateError):
        model(torch.randn(5, 3))
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn.SimpleRNN(3, 3, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["conv", "positive_dim"])
def test_a_resumed_stream_of_batch_one_is_bit_identical(kind, layout, tmp_path):
    """With a batch of 1 and the features not last, a loaded (contiguous) state flattened to a column-major
    view, which the cell's matrix product rounds differently from the stream's own row-major state: the resumed
    stream left the uninterrupted one by an ulp (found by test_properties)."""
    make, _ = KINDS[kind]
    dim, shape = {"conv": (-3, (1, 3, 2, 2)), "positive_dim": (1, (1, 3, 4))}[layout]
    layer = make(3, 5, dim=dim).double()
    x = torch.randn(8, *shape, dtype=DT)
    with torch.no_grad():
        whole = torch.stack([layer(xt) for xt in x])
        layer.zero_states()
        first = torch.stack([layer(xt) for xt in x[:4]])
        layer.save_states(tmp_path / "s.safetensors")
        fresh = make(3, 5, dim=dim).double()
        fresh.load_state_dict(layer.state_dict())
        fresh.load_states(tmp_path / "s.safetensors")
        rest = torch.stack([fresh(xt) for xt in x[4:]])
        assert torch.equal(torch.cat([first, rest]), whole)
        fresh.load_states(tmp_path / "s.safetensors")  # and by scan: from the loaded state as from the live one
        assert torch.equal(fresh.scan(x[4:]), layer.scan(x[4:]))
