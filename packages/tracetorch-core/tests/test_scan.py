"""Sequence mode == step loop: outputs, final states and gradients (input, parameters, initial state);
chunked == whole; truncated BPTT; the fused linear scan against its reference."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_run, run
from torch import nn

import tracetorch as tt
from tracetorch import snn
from tracetorch.ops import linear_scan, linear_scan_ref

T, B, N = 12, 3, 5
DT = torch.float64  # gradients compared at tight tolerance


def per_neuron(lo, hi, n=N):
    return (torch.rand(n, dtype=DT) * (hi - lo) + lo).to(DT)


def make_layer(kind: str, dim: int = -1):
    if kind == "LI":
        return snn.LI(N, beta=per_neuron(0.5, 0.95), dim=dim).double()
    if kind == "LI-scalar":
        return snn.LI(N, beta=0.8, beta_rank=0, dim=dim).double()
    if kind == "LI-fixed":
        return snn.LI(N, beta=1.0, learn_beta=False, dim=dim).double()
    surrogate = kind.split("-")[1] if "-" in kind else "sigmoid"
    return snn.LIB(N, beta=per_neuron(0.5, 0.95), threshold=per_neuron(0.5, 1.5), dim=dim, spike_fn=surrogate).double()


LAYERS = ["LI", "LI-scalar", "LI-fixed", "LIB", "LIB-atan", "LIB-fast_sigmoid", "LIB-triangle"]


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("nonzero_start", [False, True])
def test_layer_scan_equals_step_loop(kind, nonzero_start):
    layer = make_layer(kind)
    x = torch.randn(T, B, N, dtype=DT) * 1.5
    initial = {"mem": torch.randn(B, N, dtype=DT)} if nonzero_start else None
    a = run(layer, x, initial, "scan")
    b = run(layer, x, initial, "steps")
    assert a[0].abs().sum() > 0
    if kind.startswith("LIB"):
        assert 0 < a[0].mean() < 1, "the test should exercise both spiking and silent steps"
    assert_same_run(a, b)
    if nonzero_start:
        assert a[2]["init:mem"].abs().sum() > 0


@pytest.mark.parametrize("kind", ["LI", "LIB"])
def test_conv_layout_scan_equals_step_loop(kind):
    layer = make_layer(kind, dim=-3)
    x = torch.randn(T, 2, N, 3, 4, dtype=DT)
    initial = {"mem": torch.randn(2, N, 3, 4, dtype=DT)}
    assert_same_run(run(layer, x, initial, "scan"), run(layer, x, initial, "steps"))


def chain():
    return tt.Model(
        nn.Linear(4, N), snn.LIB(N, beta=per_neuron(0.6, 0.9)), nn.Linear(N, N), snn.LI(N, beta=0.7)
    ).double()


class Residual(tt.Model):
    """A model with its own forward (not a chain): scan falls back to calling it per step."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, N)
        self.lif = snn.LIB(N)
        self.readout = snn.LI(N)

    def forward(self, x):
        h = self.inp(x)
        return self.readout(h + self.lif(h))


@pytest.mark.parametrize("make", [chain, lambda: Residual().double()], ids=["chain", "custom-forward"])
def test_model_scan_equals_step_loop(make):
    model = make()
    x = torch.randn(T, B, 4, dtype=DT)
    keys = list(model.get_states())
    initial = {k: torch.randn(B, N, dtype=DT) for k in keys}
    assert_same_run(run(model, x, initial, "scan"), run(model, x, initial, "steps"))
    assert_same_run(run(model, x, None, "scan"), run(model, x, None, "steps"))


def test_plain_sequential_and_stateless_modules_scan():
    seq = nn.Sequential(nn.Linear(4, N), snn.LIB(N), nn.Flatten(), nn.Linear(N, 2)).double()
    x = torch.randn(T, B, 4, dtype=DT)
    assert_same_run(run(seq, x, None, "scan"), run(seq, x, None, "steps"))
    unbatched = torch.randn(T, 4, dtype=DT)  # [T, N]: each step is one unbatched sample
    lin = nn.Linear(4, 3).double()
    # one matmul over all steps vs one matrix-vector product per step: equal to rounding (bitwise on some BLAS only)
    torch.testing.assert_close(tt.scan(lin, unbatched), torch.stack([lin(v) for v in unbatched.unbind(0)]))


def test_batchnorm_in_training_is_scanned_per_step():
    seq = tt.Model(nn.Linear(4, N), nn.BatchNorm1d(N), snn.LI(N)).double()
    x = torch.randn(T, 8, 4, dtype=DT)
    a = run(seq, x, None, "scan")
    b = run(seq, x, None, "steps")
    assert_same_run(a, b, exact_outputs=False)


def test_chunked_scan_equals_whole_scan():
    model = chain()
    x = torch.randn(2 * T, B, 4, dtype=DT)
    whole = model.scan(x)
    whole_states = {k: v.clone() for k, v in model.get_states().items()}
    model.zero_states()
    parts = torch.cat([model.scan(x[:5]), model.scan(x[5:11]), model.scan(x[11:])])
    assert torch.equal(whole, parts)
    for k, v in model.get_states().items():
        assert torch.equal(v, whole_states[k])


def test_chunked_gradients_equal_whole_when_not_detached():
    model = chain()
    x = torch.randn(2 * T, B, 4, dtype=DT, requires_grad=True)
    model.scan(x).pow(2).sum().backward()
    g_whole = x.grad.clone()
    p_whole = [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    model.zero_states()
    torch.cat([model.scan(x[:7]), model.scan(x[7:])]).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, g_whole, rtol=1e-10, atol=1e-12)
    for p, g in zip(model.parameters(), p_whole, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def test_truncated_bptt_with_detach_states():
    model = chain()
    x = torch.randn(2 * T, B, 4, dtype=DT, requires_grad=True)
    model.scan(x[:T])
    model.detach_states()
    model.scan(x[T:]).sum().backward()
    assert x.grad[:T].abs().sum() == 0  # no gradient crossed the chunk boundary
    assert x.grad[T:].abs().sum() > 0


@pytest.mark.parametrize(
    "a_shape, x_shape",
    [((N,), (T, B, N)), ((), (T, B, N)), ((N, 1, 1), (T, B, N, 3, 2)), ((B, N), (T, B, N))],
)
def test_linear_scan_matches_reference(a_shape, x_shape):
    x = torch.randn(x_shape, dtype=DT, requires_grad=True)
    a = torch.rand(a_shape, dtype=DT).requires_grad_(True)
    h0 = torch.randn(x_shape[1:], dtype=DT, requires_grad=True)
    w = torch.randn(x_shape, dtype=DT)
    outs, grads = [], []
    for fn in (linear_scan, linear_scan_ref):
        y = fn(x, a, h0)
        outs.append(y)
        grads.append(torch.autograd.grad((y * w).sum(), (x, a, h0)))
    assert torch.equal(outs[0], outs[1])
    for g_fast, g_ref in zip(*grads, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)


def test_linear_scan_float32_forward_is_bit_identical_and_one_node():
    x = torch.randn(200, 4, 64, requires_grad=True)
    a = torch.rand(64)
    h0 = torch.zeros(4, 64)
    y = linear_scan(x, a, h0)
    assert torch.equal(y, linear_scan_ref(x, a, h0))
    assert y.grad_fn.next_functions[0][0].variable is x  # one node straight back to the input leaf


def test_linear_scan_gradcheck():
    x = torch.randn(5, 2, 3, dtype=DT, requires_grad=True)
    a = torch.rand(3, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(linear_scan, (x, a, h0))
