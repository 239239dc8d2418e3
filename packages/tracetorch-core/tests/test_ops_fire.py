"""The firing op (``tracetorch.ops.fire``) against its reference, directly: every firing type, every kernel this
machine has (native C where it applies, the torch kernel everywhere), outputs, final states and gradients."""

from __future__ import annotations

import random

import pytest
import torch
from test_snn_types import random_params

import tracetorch as tt
from tracetorch import functional as F
from tracetorch.ops import fire

FIRING = [n for n in F.NAMES if F.NeuronSpec.from_name(n).fires]


def _case(name: str, kernel: str, dtype: torch.dtype):
    rng = random.Random(f"fire:{name}:{kernel}:{dtype}")
    gen = torch.Generator().manual_seed(rng.randrange(10**6))
    layer = getattr(tt.snn, name)(5, **random_params(name, 5, gen)).to(dtype)
    spec = layer.spec
    core = [s for s in spec.states if not s.endswith("syn")]
    u = (torch.randn(9, 3, 5, generator=gen, dtype=dtype) * 1.5).requires_grad_()
    state = {s: (torch.randn(3, 5, generator=gen, dtype=dtype) * 0.5).requires_grad_() for s in core}
    params = {k: v.detach().clone().requires_grad_() for k, v in layer.params(2).items()}
    spike_fn = F.make_spike_fn(rng.choice(["sigmoid", "atan", "fast_sigmoid", "triangle"]))
    return spec, u, state, params, spike_fn, rng.random() < 0.3


def _run(fn, spec, u, state, params, spike_fn, detach_reset):
    y, new = fn(spec, u, state, params, spike_fn, detach_reset, {})
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    finals = [new[k] for k in sorted(new)]
    loss = (y * w).sum() + sum((f * (i + 2)).sum() for i, f in enumerate(finals))
    leaves = [u, *state.values(), *params.values()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return y.detach(), {k: v.detach() for k, v in new.items()}, grads


@pytest.mark.parametrize("kernel", ["torch", "native"])
@pytest.mark.parametrize("name", FIRING)
def test_fire_sequence_equals_its_reference(name, kernel, monkeypatch):
    dtype = torch.float64
    spec, u, state, params, spike_fn, detach_reset = _case(name, kernel, dtype)
    if kernel == "torch":
        monkeypatch.setattr(fire, "choose_kernels", lambda cfg, u: None)
    else:
        cfg = fire.FireConfig(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, detach_reset)
        if fire.choose_kernels(cfg, u) is not fire.native:
            pytest.skip("no native kernel for this type here (no C compiler)")
    ref = _run(fire.fire_sequence_ref, spec, u, state, params, spike_fn, detach_reset)
    got = _run(fire.fire_sequence, spec, u, state, params, spike_fn, detach_reset)
    assert torch.equal(got[0], ref[0]), "outputs"
    assert got[1].keys() == ref[1].keys()
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], rtol=1e-12, atol=1e-12)
    assert ref[0].abs().sum() > 0 and any(g is not None and g.abs().sum() > 0 for g in ref[2])
    for i, (a, b) in enumerate(zip(got[2], ref[2], strict=True)):
        assert (a is None) == (b is None), f"gradient {i} present in one only"
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda m, i=i: f"gradient {i}: {m}")
