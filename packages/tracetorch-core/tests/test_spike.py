"""Spike functions: exact 0/1 forward (v >= 0 fires), the documented surrogate derivatives backward."""

from __future__ import annotations

import math

import pytest
import torch

from tracetorch import functional as F

V = torch.linspace(-2, 2, 401, dtype=torch.float64)


def test_forward_is_exact_heaviside_in_input_dtype():
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        v = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 3.0], dtype=dtype)
        s = F.heaviside(v)
        assert s.dtype == dtype
        assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


EXPECTED = {
    "sigmoid": lambda v, k: k * torch.sigmoid(k * v) * (1 - torch.sigmoid(k * v)),
    "atan": lambda v, k: (k / 2) / (1 + (math.pi * k * v / 2) ** 2),
    "fast_sigmoid": lambda v, k: 1 / (1 + k * v.abs()) ** 2,
    "triangle": lambda v, k: (1 - k * v.abs()).clamp(min=0),
}


@pytest.mark.parametrize("name", sorted(F.SURROGATES))
@pytest.mark.parametrize("slope", [None, 3.0])
def test_backward_is_the_surrogate(name, slope):
    v = V.clone().requires_grad_(True)
    g = torch.randn_like(V)
    F.heaviside(v, name, slope).backward(g)
    k = F.SURROGATES[name] if slope is None else slope
    torch.testing.assert_close(v.grad, g * EXPECTED[name](V, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(F.SURROGATES))
def test_default_surrogates_peak_at_one(name):
    v = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    F.heaviside(v, name).sum().backward()
    assert v.grad.item() == pytest.approx(1.0)


def test_modes_forward_and_backward():
    v = torch.tensor([-1.0, -1e-3, 0.0, 1e-3, 1.0], dtype=torch.float64, requires_grad=True)
    assert F.spike(v, "round").tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # round(0.5) is 0: fires for v > 0
    torch.testing.assert_close(F.spike(v, "smooth"), torch.sigmoid(4 * v))
    F.spike(v, "smooth").sum().backward()
    torch.testing.assert_close(v.grad, EXPECTED["sigmoid"](v.detach(), 4.0))
    torch.manual_seed(0)
    big = torch.full((20000,), 0.25)
    rate = F.spike(big, "stochastic").mean().item()
    assert rate == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.01)
    with pytest.raises(ValueError, match="must be 'sigmoid'"):
        F.spike(v, "round", "atan")
    with pytest.raises(ValueError, match="unknown spike mode"):
        F.spike(v, "sometimes")


def test_spike_function_module_exposes_fire_and_grad():
    f = F.SpikeFunction(surrogate="triangle", slope=2.0)
    v = V.clone()
    assert torch.equal(f.fire(v), (v >= 0).double())
    torch.testing.assert_close(f.grad(v), EXPECTED["triangle"](v, 2.0))
    assert isinstance(F.make_spike_fn("atan"), F.SpikeFunction) and F.make_spike_fn("stochastic").mode == "stochastic"
    with pytest.raises(TypeError):
        F.make_spike_fn(3)


def test_module_form_and_errors():
    mod = F.Heaviside("atan", slope=3)
    v = V.clone().requires_grad_(True)
    mod(v).sum().backward()
    torch.testing.assert_close(v.grad, EXPECTED["atan"](V, 3.0))
    with pytest.raises(ValueError, match="unknown surrogate"):
        F.heaviside(V, "relu")
    with pytest.raises(ValueError, match="unknown surrogate"):
        F.Heaviside("relu")


def test_decay_conversions_round_trip():
    assert F.halflife_to_decay(10.0) ** 10 == pytest.approx(0.5)
    assert F.decay_to_halflife(F.halflife_to_decay(7.0)) == pytest.approx(7.0)
    assert F.decay_to_tau(F.tau_to_decay(5.0)) == pytest.approx(5.0)
    assert F.horizon_to_decay(4.0) == 0.75 and F.decay_to_horizon(0.75) == pytest.approx(4.0)
    t = torch.tensor([2.0, 20.0])
    torch.testing.assert_close(F.decay_to_halflife(F.halflife_to_decay(t)), t)
