"""The trace op (``tracetorch.ops.trace``): the native C kernels against the torch path (linear scans) and the
reference step loop, for every type that has a trace stage (the 8 LI types' membranes, the synaptic stage of the
S types): outputs and final states bit-identical, gradients of the input, every parameter and every initial state
to rounding. Every comparison first checks that the native kernel really ran."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import assert_same_run, run
from test_native import LAYOUTS, _compiler_works, make, without_native

import tracetorch as tt
import tracetorch.functional as F
from tracetorch.ops import backend, trace
from tracetorch.ops.trace import native as trace_native

pytestmark = pytest.mark.skipif(not _compiler_works(), reason="no working C compiler on this machine")

# every type with a trace stage: the LI family (membrane) and the S types (synaptic stage)
TRACED = [n for n in F.NAMES if not F.NeuronSpec.from_name(n).fires or F.NeuronSpec.from_name(n).synaptic]


@pytest.fixture
def trace_calls(monkeypatch):
    """Counts the native trace kernels' forward calls."""
    n = {"native": 0}
    forward = trace_native.trace_forward

    def counted(*a):
        n["native"] += 1
        return forward(*a)

    monkeypatch.setattr(trace_native, "trace_forward", counted)
    return n


def test_every_traced_type_is_covered():
    assert len(TRACED) == 20  # 8 LI + 12 firing S types


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", TRACED)
def test_native_trace_equals_torch_path_and_reference(name, dtype, trace_calls):
    rng = random.Random(name + str(dtype))
    spec = F.NeuronSpec.from_name(name)
    stages = int(spec.synaptic) + int(not spec.fires)  # one trace op per stage
    for layout, (dim, step_shape) in LAYOUTS.items():
        gen = torch.Generator().manual_seed(rng.randrange(10**6))
        layer = make(name, 7, dim, gen, dtype, rng.choice([0, 1]), "atan", rng.random() < 0.3)
        x = torch.randn(11, *step_shape, generator=gen, dtype=dtype) * 1.5
        x[3].view(-1)[:3] = 0.0  # ties at the sign split: both branches take the gradient
        initial = None
        if rng.random() < 0.7:
            initial = {s: torch.randn(step_shape, generator=gen, dtype=dtype) * 0.5 for s in layer.state_names}
        before = trace_calls["native"]
        a = run(layer, x, initial, "scan")
        assert trace_calls["native"] == before + stages, (name, layout)
        b = without_native(run, layer, x, initial, "scan")  # the torch path
        assert trace_calls["native"] == before + stages
        c = run(layer, x, initial, "steps")
        tol = {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-5}
        assert_same_run(a, b, **tol)
        assert_same_run(a, c, **tol)
        for k in a[1]:  # final states: bit for bit
            assert torch.equal(a[1][k], b[1][k]), (name, layout, k)


def test_native_trace_without_autograd_and_chunked():
    gen = torch.Generator().manual_seed(0)
    layer = make("DSLIEMA", 6, -1, gen, torch.float32, 1, "atan", False)
    x = torch.randn(20, 3, 6, generator=gen)
    with torch.no_grad():
        whole = layer.scan(x)
        end = layer.get_states()
        tt.zero_states(layer)
        parts = torch.cat([layer.scan(p) for p in x.split([7, 13])])
    assert torch.equal(whole, parts)
    for k, v in layer.get_states().items():
        assert torch.equal(v, end[k]), k


def test_threaded_split_equals_one_thread(monkeypatch):
    from tracetorch.ops.fire import native

    monkeypatch.setattr(native, "_PAR_MIN", 0)
    gen = torch.Generator().manual_seed(4)
    layer = make("DLI", 5, -1, gen, torch.float64, 1, "atan", False)
    x = torch.randn(9, 6, 5, generator=gen, dtype=torch.float64)
    initial = {s: torch.randn(6, 5, generator=gen, dtype=torch.float64) for s in layer.state_names}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        split = run(layer, x, initial, "scan")
        torch.set_num_threads(1)
        one = run(layer, x, initial, "scan")
    finally:
        torch.set_num_threads(threads)
    assert_same_run(split, one, rtol=1e-12, atol=1e-14)


def test_the_chooser_says_why_not():
    x = torch.zeros(3, 2, 4)
    assert trace.why_not_native(x, [torch.zeros(4)], False, False) is None
    assert "float16" in trace.why_not_native(x.half(), [torch.zeros(4).half()], False, False)
    assert "float32" in trace.why_not_native(x, [torch.zeros(4, dtype=torch.float64)], True, True)
    with backend.use_backend("torch"):
        assert "backend 'torch' forbids" in trace.why_not_native(x, [], False, True)
    assert backend.explain(tt.snn.DLIEMA(4), x[0])["scan"].startswith("native C trace kernel")
    with backend.use_backend("torch"):
        assert backend.explain(tt.snn.DLIEMA(4), x[0])["scan"].startswith("linear scans")
