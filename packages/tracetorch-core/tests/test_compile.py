"""torch.compile(fullgraph=True): a layer's step, a model's step and the pure step functions compile with no
graph breaks (fullgraph raises on any), and give the same numbers as eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import functional as F
from tracetorch import rnn, snn


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def steps(fn, xs):
    return torch.stack([fn(x) for x in xs])


@pytest.mark.parametrize(
    "make", [lambda: snn.LI(16), lambda: snn.LIB(16), lambda: snn.LIB(4, dim=-3), lambda: snn.DSRLITS(16)]
)
def test_layer_step_compiles_fullgraph(make):
    eager, compiled_layer = make(), make()
    compiled_layer.load_state_dict(eager.state_dict())
    shape = (2, 4, 3, 3) if eager.dim == -3 else (2, 16)
    xs = torch.randn(5, *shape) * 2
    compiled = torch.compile(compiled_layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(steps(compiled, xs), steps(eager, xs))
    for (k, a), (_, b) in zip(compiled_layer.get_states().items(), eager.get_states().items(), strict=True):
        assert torch.equal(a, b), k


def test_model_step_compiles_fullgraph_and_trains():
    model = tt.Model(nn.Linear(8, 16), snn.LIB(16), nn.Linear(16, 4), snn.LI(4))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 3, 8)
    out = steps(compiled, x)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_states()
    model.zero_grad()
    ref = steps(model, x)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", ["LIB", "DSRLITS"])
def test_pure_step_function_compiles_with_inductor(name):
    spec = F.NeuronSpec.from_name(name)
    spike_fn = F.Heaviside("sigmoid")
    x = torch.randn(4, 32) * 2
    state = {s: torch.randn(4, 32) for s in spec.states}
    params = {p.name: torch.rand(32) + 0.2 for p in spec.params}

    def step(x, state, params):
        return F.neuron_step(x, state, params, spec, spike_fn)

    compiled = torch.compile(step, fullgraph=True)
    (y1, st1), (y2, st2) = compiled(x, state, params), step(x, state, params)
    assert torch.equal(y1, y2) and y1.abs().sum() > 0
    for k in st1:
        torch.testing.assert_close(st1[k], st2[k])


@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU, rnn.SimpleRNN])
def test_recurrent_scan_compiles_fullgraph_and_trains(cls):
    """ATen's fused sequence ops do not trace; a compiled scan runs the same cells as a step loop instead."""
    compiled_layer, eager = cls(6, 12), cls(6, 12)
    compiled_layer.load_state_dict(eager.state_dict())
    x = torch.randn(10, 3, 6)
    tt.load_states(compiled_layer, {"h": torch.randn(3, 12), **({"c": torch.randn(3, 12)} if cls is rnn.LSTM else {})})
    tt.load_states(eager, compiled_layer.save_states())
    y = torch.compile(compiled_layer.scan, fullgraph=True, backend="aot_eager")(x)
    y.square().sum().backward()
    want = eager.scan(x)
    want.square().sum().backward()
    torch.testing.assert_close(y, want)
    for (k, a), (_, b) in zip(compiled_layer.get_states().items(), eager.get_states().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    for (k, a), (_, b) in zip(compiled_layer.named_parameters(), eager.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=k)


def _graph_ops(make, x):
    """Compile ``make().scan`` with fullgraph=True; return the layer, the output and the ops in dynamo's graph."""
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    layer = make()
    y = torch.compile(layer.scan, fullgraph=True, backend=record)(x)
    return layer, y, seen


@pytest.mark.parametrize("name", ["LIB", "RLIB", "SLIT", "SRLITS", "DLIB", "DSRLITS", "LI"])
def test_spiking_scan_compiles_fullgraph_with_native_kernels_kept(name):
    """Firing types (single-branch and D) keep the native C kernels in the graph as one custom op
    (tracetorch::fire_native) with the eager numbers bit for bit (outputs, final states, gradients); LI types trace
    their linear scans."""
    from tracetorch.ops import fire

    cls = getattr(snn, name)
    eager = cls(16)
    x = torch.randn(10, 3, 16) * 2
    start = {k: torch.randn(3, 16) for k in eager.state_names}
    eager.load_states(start)

    def make():
        layer = cls(16)
        layer.load_state_dict(eager.state_dict())
        layer.load_states(start)
        return layer

    compiled_layer, y, ops = _graph_ops(make, x)
    natively = eager.spec.fires and fire.compiles_natively(eager.spec, x, eager.spike_fn, eager.detach_reset)
    assert ("tracetorch.fire_native.default" in ops) == natively, ops
    assert natively == (name != "LI") or not fire.native.native_available()
    traced = not eager.spec.fires or eager.spec.synaptic  # a trace stage: kept as tracetorch::trace_native
    assert ("tracetorch.trace_native.default" in ops) == (traced and fire.native.native_available()), ops
    y.square().sum().backward()
    want = eager.scan(x)
    want.square().sum().backward()
    exact = natively or name == "LI"  # the step loop's autograd sums gradients in another order than the kernel
    check = torch.equal if exact else (lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5))
    assert check(y, want)
    for (k, a), (_, b) in zip(compiled_layer.get_states().items(), eager.get_states().items(), strict=True):
        assert check(a, b), k
    for (k, a), (_, b) in zip(compiled_layer.named_parameters(), eager.named_parameters(), strict=True):
        assert check(a.grad, b.grad), k


def test_native_custom_op_passes_opcheck():
    """torch.library.opcheck: the fake (shape) implementation, the schema and the autograd registration agree with
    the real kernel."""
    from tracetorch.ops import fire

    if not fire.native.native_available():
        pytest.skip(f"native kernels unavailable: {fire.native.native_status()}")

    def decay() -> torch.Tensor:
        return (torch.rand(8) * 0.8 + 0.1).requires_grad_(True)

    def some(shape=(2, 8), scale=1.0) -> torch.Tensor:
        return (torch.randn(shape) * scale).requires_grad_(True)

    u = some((6, 2, 8), 2.0)
    thr, bias = (torch.rand(8) + 0.5).requires_grad_(True), some((8,), 0.1)
    # FireStates (mem, nm, rec, nr) and FireParams (beta, nbeta, gamma, ngamma, thr, nthr, bias, kp, kn, w, nw)
    rlib = ([some(), None, some(), None], [decay(), None, decay(), None, thr, None, bias, None, None, some((8,)), None])
    dsrlit = (
        [some(), some(), some(), some()],
        [decay(), decay(), decay(), decay(), thr, thr.detach() + 0.2, bias, None, None, some((8,)), some((8,))],
    )
    for name, (states, params) in (("RLIB", rlib), ("DSRLIT", dsrlit)):
        args = (u, *states, *params, name, True, 4.0, "sigmoid", False)
        torch.library.opcheck(torch.ops.tracetorch.fire_native.default, args)


def test_trace_custom_op_passes_opcheck():
    """The trace op's custom op (tracetorch::trace_native): fake implementation, schema and autograd agree with the
    kernel, single and dual, plain and EMA."""
    from tracetorch.ops import fire

    if not fire.native.native_available():
        pytest.skip(f"native kernels unavailable: {fire.native.native_status()}")

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.requires_grad_(True)

    x = leaf(torch.randn(6, 2, 8))
    a, na = leaf(torch.rand(8) * 0.8 + 0.1), leaf(torch.rand(8) * 0.8 + 0.1)
    h0, nh0 = leaf(torch.randn(2, 8)), leaf(torch.randn(2, 8))
    for ema in (False, True):
        torch.library.opcheck(torch.ops.tracetorch.trace_native.default, (x, a, h0, None, None, ema, True))
        torch.library.opcheck(torch.ops.tracetorch.trace_native.default, (x, a, h0, na, nh0, ema, True))
