"""tt.Model: the walk over one model's tree, scoped reset, containers, overriding, TTcompile."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import snn


class Net(tt.Model):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), snn.LIB(4), nn.Linear(4, 4), snn.LIB(4))
        self.extra = [snn.LI(4)]  # plain list: not a registered submodule, still part of the model's states
        self.heads = {"a": snn.LI(4), "nested": [snn.LI(4)]}
        self.owner = None

    def forward(self, x):
        h = self.body(x)
        return self.extra[0](h) + self.heads["a"](h) + self.heads["nested"][0](h)


def test_walk_finds_submodules_and_plain_containers_once():
    net = Net()
    net(torch.randn(2, 3))
    keys = list(net.get_states())
    assert keys == ["body.1.mem", "body.3.mem", "extra.0.mem", "heads.a.mem", "heads.nested.0.mem"]
    assert all(v is not None for v in net.get_states().values())


def test_shared_layers_and_back_references_are_visited_once():
    net = Net()
    net.extra.append(net.body[1])  # the same layer reachable twice
    net.heads["self"] = [net]  # a back-reference to the model itself
    net(torch.randn(2, 3))
    keys = list(net.get_states())
    assert len(keys) == len(set(keys)) == 5
    net.zero_states()
    assert all(v is None for v in net.get_states().values())


def test_reset_is_scoped_to_one_model():
    a, b = Net(), Net()
    a(torch.randn(2, 3))
    b(torch.randn(2, 3))
    a.zero_states()
    assert all(v is None for v in a.get_states().values())
    assert all(v is not None for v in b.get_states().values())
    b.detach_states()
    assert all(v is None for v in a.get_states().values())


def test_walker_does_not_call_foreign_objects():
    class Foreign:
        called = False

        def zero_states(self):
            Foreign.called = True

    net = Net()
    net.things = [Foreign()]
    net.zero_states()
    assert not Foreign.called


def test_override_calling_super_does_not_recurse():
    class Counting(Net):
        resets = 0

        def zero_states(self):
            Counting.resets += 1
            super().zero_states()

    net = Counting()
    net(torch.randn(2, 3))
    net.zero_states()
    assert Counting.resets == 1
    assert all(v is None for v in net.get_states().values())


def test_functions_work_on_any_module():
    seq = nn.Sequential(nn.Linear(3, 4), snn.LIB(4))
    seq(torch.randn(2, 3))
    assert list(tt.get_states(seq)) == ["1.mem"]
    tt.zero_states(seq)
    assert seq[1].mem is None


def test_chain_model_indexing_and_errors():
    m = tt.Model(nn.Linear(3, 4), snn.LI(4))
    assert len(m) == 2 and isinstance(m[1], snn.LI) and m.is_chain
    with pytest.raises(TypeError, match=r"not an nn\.Module"):
        tt.Model(nn.Linear(3, 4), "relu")
    with pytest.raises(NotImplementedError, match="has no modules"):
        tt.Model()(torch.randn(2, 3))


def test_ttcompile_round_trip_is_exact_and_keeps_state_dict_keys():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(20, 2, 3) * 2
    keys = set(net.state_dict())
    raws = {k: v.clone() for k, v in net.state_dict().items()}
    ref = net.scan(x)
    net.zero_states()
    net.TTcompile()
    assert "TTcompiled" in repr(net.body[1])
    assert set(net.state_dict()) == keys
    with torch.no_grad():
        compiled = net.scan(x)
    assert torch.equal(compiled, ref)
    net.TTdecompile()
    net.zero_states()
    assert torch.equal(net.scan(x), ref)
    for k, v in net.state_dict().items():
        assert torch.equal(v, raws[k])


def test_ttcompile_survives_saturated_values_and_follows_load_state_dict():
    layer = snn.LIB(2)
    with torch.no_grad():
        layer.raw("beta").fill_(40.0)  # sigmoid(40) == 1.0 in float32: the original's decompile asserted here
    layer.TTcompile()
    layer.TTdecompile()
    assert layer.raw("beta")[0].item() == 40.0
    other = snn.LIB(2, beta=0.3)
    layer.TTcompile()
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer.beta, torch.full((2,), 0.3))  # the fold was refreshed


def test_training_a_compiled_layer_warns():
    layer = snn.LIB(2)
    layer.TTcompile()
    with pytest.warns(UserWarning, match="TTdecompile"):
        layer(torch.randn(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = snn.LIB(2)
        quiet.TTcompile()
        with torch.no_grad():  # inference on a compiled layer is what TTcompile is for: no warning
            quiet(torch.randn(1, 2))


def test_deepcopy_mid_stream_copies_state_values_not_graphs():
    import copy

    net = Net()
    net(torch.randn(2, 3, requires_grad=True))
    twin = copy.deepcopy(net)
    for (k, a), (k2, b) in zip(net.get_states().items(), twin.get_states().items(), strict=True):
        assert k == k2 and torch.equal(a, b) and b.grad_fn is None and a.data_ptr() != b.data_ptr()
    assert net.body[1].mem.grad_fn is not None  # the original keeps its graph
    x = torch.randn(2, 3)
    assert torch.equal(twin(x), net(x))
