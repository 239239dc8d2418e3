"""torch.compile(fullgraph=True): a layer's step, a model's step and the pure step functions compile with no
graph breaks (fullgraph raises on any), and give the same numbers as eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import functional as F
from tracetorch import snn


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def steps(fn, xs):
    return torch.stack([fn(x) for x in xs])


@pytest.mark.parametrize("make", [lambda: snn.LI(16), lambda: snn.LIB(16), lambda: snn.LIB(4, dim=-3)])
def test_layer_step_compiles_fullgraph(make):
    eager, compiled_layer = make(), make()
    compiled_layer.load_state_dict(eager.state_dict())
    shape = (2, 4, 3, 3) if eager.dim == -3 else (2, 16)
    xs = torch.randn(5, *shape) * 2
    compiled = torch.compile(compiled_layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(steps(compiled, xs), steps(eager, xs))
    assert torch.equal(compiled_layer.mem, eager.mem)


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


def test_pure_step_function_compiles_with_inductor():
    def lif(x, mem, beta, thr):
        return F.lib_step(x, F.LIBState(mem), F.LIBParams(beta, thr))

    compiled = torch.compile(lif, fullgraph=True)
    x, mem = torch.randn(4, 32) * 2, torch.randn(4, 32)
    beta, thr = torch.rand(32), torch.rand(32) + 0.5
    (s1, st1), (s2, st2) = compiled(x, mem, beta, thr), lif(x, mem, beta, thr)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(st1.mem, st2.mem)
