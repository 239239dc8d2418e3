"""Parameter definition: rank, init from numbers or tensors, learnable or fixed, constraints, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import snn
from tracetorch.params import get_constraint


class Toy(tt.Layer):
    def __init__(self, n=5, **kw):
        super().__init__(n)
        self.define_parameter("p", kw.pop("value", 0.5), **kw)


@pytest.mark.parametrize("rank, shape", [(0, ()), (1, (5,))])
def test_rank_gives_shape(rank, shape):
    layer = Toy(value=0.3, rank=rank, constraint="sigmoid")
    assert layer.p.shape == shape
    torch.testing.assert_close(layer.p, torch.full(shape, 0.3))


def test_tensor_init_per_neuron_and_scalar():
    v = torch.linspace(0.1, 0.9, 5)
    layer = Toy(value=v, constraint="sigmoid")
    torch.testing.assert_close(layer.p, v)
    layer = Toy(value=torch.tensor(0.7), rank=1, constraint="sigmoid")  # a 0-d tensor fills rank 1
    torch.testing.assert_close(layer.p, torch.full((5,), 0.7))


def test_learnable_is_parameter_fixed_is_buffer():
    learn = snn.LIB(4)
    fixed = snn.LIB(4, learn_beta=False, learn_threshold=False, learn_bias=False)
    assert {n for n, _ in learn.named_parameters()} == {"raw_beta", "raw_threshold", "raw_bias"}
    assert list(fixed.parameters()) == []
    assert set(fixed.state_dict()) == {"raw_beta", "raw_threshold", "raw_bias"}  # fixed ones are still saved
    assert isinstance(learn.raw("beta"), nn.Parameter)


@pytest.mark.parametrize("constraint", ["identity", "sigmoid", "softplus", "exp"])
def test_constraint_inverse_round_trip(constraint):
    c = get_constraint(constraint)
    v = torch.tensor([1e-4, 0.2, 0.5, 0.9, 0.9999], dtype=torch.float64)
    torch.testing.assert_close(c.forward(c.inverse(v)), v, rtol=1e-12, atol=0)


def test_softplus_inverse_is_stable_for_large_and_small_values():
    c = get_constraint("softplus")
    v = torch.tensor([1e-30, 1e-6, 50.0, 1e4], dtype=torch.float64)
    raw = c.inverse(v)
    assert torch.isfinite(raw).all()
    torch.testing.assert_close(c.forward(raw), v, rtol=1e-9, atol=0)


def test_effective_value_is_differentiable_through_constraint():
    layer = snn.LIB(3, beta=0.8, threshold=2.0)
    (layer.beta.sum() + layer.threshold.sum()).backward()
    assert layer.raw("beta").grad is not None and layer.raw("threshold").grad is not None
    torch.testing.assert_close(layer.raw("beta").grad, torch.full((3,), 0.8 * 0.2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": 1.5}, r"beta must be in \(0, 1\)"),
        ({"beta": 1.0}, "learn_beta=False"),
        ({"threshold": 0.0}, "learn_threshold=False"),
        ({"threshold": -1.0}, r"threshold must be in \(0, inf\)"),
        ({"beta": float("nan")}, "finite"),
        ({"beta": torch.full((4,), 0.5)}, "expected 3 values"),
        ({"beta": torch.full((3, 1), 0.5)}, "shape"),
        ({"beta_rank": 2}, "rank must be 0"),
        ({"beta": "0.9"}, "number or a tensor"),
    ],
)
def test_bad_initial_values_raise_clear_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        snn.LIB(3, **kwargs)


def test_boundary_values_allowed_for_fixed_parameters():
    li = snn.LI(3, beta=1.0, learn_beta=False)  # a perfect integrator
    assert torch.equal(li.beta, torch.ones(3))
    x = torch.ones(2, 3)
    li(x)
    assert torch.equal(li(x), torch.full((2, 3), 2.0))
    lib = snn.LIB(3, threshold=0.0, learn_threshold=False)
    assert torch.equal(lib.threshold, torch.zeros(3))


def test_set_parameter_through_attribute():
    layer = snn.LIB(3)
    raw_before = layer.raw("beta")
    layer.beta = 0.5
    torch.testing.assert_close(layer.beta, torch.full((3,), 0.5))
    assert layer.raw("beta") is raw_before  # same Parameter object: optimisers keep working
    with pytest.raises(ValueError, match="beta must be in"):
        layer.beta = 2.0


def test_duplicate_names_rejected():
    layer = snn.LI(3)
    with pytest.raises(ValueError, match="already has"):
        layer.define_decay("beta", 0.5)
    with pytest.raises(ValueError, match="already has"):
        layer.define_state("mem")
    with pytest.raises(ValueError, match="already has"):
        layer.define_state("beta")


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="positive int"):
        snn.LI(0)
    with pytest.raises(TypeError, match="dim must be an int"):
        snn.LI(3, dim=1.5)
    with pytest.raises(ValueError, match="unknown spike_fn 'relu'"):
        snn.LIB(3, spike_fn="relu")
    with pytest.raises(TypeError, match=r"LIB\(num_neurons, beta=0.9"):
        snn.LIB(3, gamma=0.5)  # LIB has no recurrent trace: the error shows the real signature
    with pytest.raises(ValueError, match="unknown constraint"):
        Toy(constraint="tanh")


def test_layers_build_on_the_meta_device():
    """Shapes without memory (the zoo checks a config against its weights file this way before building it):
    constrained parameters skip the value check, which a meta tensor cannot answer."""
    with torch.device("meta"):
        layers = [snn.LIB(8, beta=0.9), snn.DSRLITS(8), tt.rnn.LSTM(4, 8), tt.ssm.Mamba(8)]
    for layer in layers:
        assert all(p.is_meta for p in layer.parameters())
    with pytest.raises(ValueError):
        snn.LIB(8, beta=1.5)  # still checked when built for real
