"""The Triton firing kernels (:mod:`tracetorch.ops.fire.triton`, CUDA) against the torch kernels they replace:
outputs, final states and every gradient for the 24 firing types (single-branch and D), over ranks, learnable flags,
layouts (per-neuron, per-channel, scalar), surrogates, detach_reset and non-zero initial states.

Runs on a CUDA device; without one, on the CPU in Triton's interpreter when ``TRITON_INTERPRET=1`` is set
(slow; how the kernels were developed). Skipped where Triton is not installed (CPU-only torch builds, CI)."""

from __future__ import annotations

import os
import random

import pytest
import torch
from conftest import assert_same_run, run
from test_snn_types import random_params

from tracetorch import functional as F
from tracetorch import snn
from tracetorch.ops import fire
from tracetorch.ops.fire import triton as triton_fire

pytest.importorskip("triton")
if torch.cuda.is_available():
    DEVICE = torch.device("cuda")
elif os.environ.get("TRITON_INTERPRET") == "1":
    DEVICE = torch.device("cpu")
else:
    pytest.skip("no CUDA device (TRITON_INTERPRET=1 runs these on the CPU)", allow_module_level=True)

FIRING = [n for n in F.NAMES if F.NeuronSpec.from_name(n).fires]


def with_kernels(monkeypatch, kernels):
    """Route every whole-sequence firing call to ``kernels`` (``None``: the torch kernels)."""

    def pick(cfg, u):
        if kernels is None or cfg.mode != "heaviside":
            return None
        return kernels

    monkeypatch.setattr(fire, "choose_kernels", pick)


def random_kwargs(name: str, n: int, layout: str, gen: torch.Generator, rng: random.Random, learn: bool) -> dict:
    """Random parameter values and ranks of a type (scalars under ``layout="scalar"``), and learnable flags."""
    kwargs = {}
    for p, v in random_params(name, n, gen).items():
        rank = 0 if layout == "scalar" else rng.choice([0, 1, 1])
        kwargs[p] = v if rank == 1 else float(v[0])
        kwargs[f"{p}_rank"] = rank
        if learn:
            kwargs[f"learn_{p}"] = rng.random() < 0.8
    return kwargs


def test_there_are_twenty_four_firing_types():
    assert len(FIRING) == 24


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", FIRING)
def test_triton_matches_torch_kernels(name, dtype, monkeypatch):
    rng = random.Random(name + str(dtype))
    for trial, layout in enumerate(["dense", "conv", "scalar"]):
        gen = torch.Generator().manual_seed(rng.randrange(10**6))
        n = 6
        kwargs = random_kwargs(name, n, layout, gen, rng, learn=True)
        kwargs["spike_fn"] = rng.choice(["sigmoid", "atan", "fast_sigmoid", "triangle"])
        kwargs["detach_reset"] = trial == 1
        layer = getattr(snn, name)(n, dim=-3 if layout == "conv" else -1, **kwargs).to(dtype=dtype)
        step_shape = (2, n, 3, 2) if layout == "conv" else (3, n)
        x = torch.randn(17, *step_shape, generator=gen, dtype=dtype) * 1.5
        initial = None
        if trial > 0:
            initial = {s: torch.randn(step_shape, generator=gen, dtype=dtype) * 0.5 for s in layer.state_names}
        layer = layer.to(DEVICE)
        x = x.to(DEVICE)
        initial = None if initial is None else {k: v.to(DEVICE) for k, v in initial.items()}
        with_kernels(monkeypatch, None)
        ref = run(layer, x, initial, "scan")
        with_kernels(monkeypatch, triton_fire)
        got = run(layer, x, initial, "scan")
        assert triton_fire.triton_status() == "available", triton_fire.triton_status()  # ran, no fallback
        if dtype == torch.float64:
            assert_same_run(got, ref, exact_outputs=True, rtol=1e-10, atol=1e-12)
        else:  # float32: spikes equal; sums over time in another order
            assert_same_run(got, ref, exact_outputs=True, rtol=2e-4, atol=1e-5)
        assert ref[0].abs().sum() > 0


TRACED = [n for n in F.NAMES if not F.NeuronSpec.from_name(n).fires or F.NeuronSpec.from_name(n).synaptic]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", TRACED)
def test_triton_trace_matches_the_torch_path(name, dtype, monkeypatch):
    """The trace op's Triton kernels (LI membranes, synaptic stages) against its torch path (linear scans)."""
    from tracetorch.ops import trace
    from tracetorch.ops.trace import triton as trace_triton

    rng = random.Random("trace" + name + str(dtype))
    for layout in ("dense", "conv", "scalar"):
        gen = torch.Generator().manual_seed(rng.randrange(10**6))
        n = 5
        kwargs = random_kwargs(name, n, layout, gen, rng, learn=False)
        layer = getattr(snn, name)(n, dim=-3 if layout == "conv" else -1, **kwargs).to(dtype=dtype)
        step_shape = (2, n, 3, 2) if layout == "conv" else (3, n)
        x = torch.randn(13, *step_shape, generator=gen, dtype=dtype) * 1.5
        initial = {s: torch.randn(step_shape, generator=gen, dtype=dtype) * 0.5 for s in layer.state_names}
        layer, x = layer.to(DEVICE), x.to(DEVICE)
        initial = {k: v.to(DEVICE) for k, v in initial.items()}
        with_kernels(monkeypatch, None)  # the firing stage on the torch kernels in both runs
        monkeypatch.setattr(trace, "choose_kernels", lambda *a: None)
        ref = run(layer, x, initial, "scan")
        monkeypatch.setattr(trace, "choose_kernels", lambda *a: trace_triton)
        got = run(layer, x, initial, "scan")
        assert trace_triton.triton_status() == "available", trace_triton.triton_status()
        tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 1e-5}
        assert_same_run(got, ref, exact_outputs=dtype == torch.float64 or DEVICE.type == "cpu", **tol)


def test_selected_on_cuda_and_status():
    if DEVICE.type != "cuda":
        pytest.skip("selection is by device: CUDA only")
    assert triton_fire.triton_status() == "available"
    layer = snn.LIB(8).to(DEVICE)
    x = torch.randn(5, 2, 8, device=DEVICE)
    assert fire.choose_kernels(fire.FireConfig(layer.spec, "heaviside", "sigmoid", 4.0, False), x) is triton_fire
    layer.scan(x).sum().backward()
    assert triton_fire.triton_status() == "available"  # not disabled by a failing launch


@pytest.mark.parametrize("t,b,d,n,chunk", [(7, 3, 5, 4, 3), (33, 2, 40, 3, 8), (9, 1, 2, 3, 1), (40, 2, 33, 16, 16)])
@pytest.mark.parametrize("variant", ["full", "no-skip", "no-init"])
def test_triton_selective_scan_matches_reference(t, b, d, n, chunk, variant):
    from test_ssm import scan_inputs

    from tracetorch.ops.selective_scan import selective_scan_ref
    from tracetorch.ops.selective_scan.triton import SelectiveScanTriton, triton_scan_status

    ins = [None if v is None else v.detach().to(DEVICE).requires_grad_(True) for v in
           scan_inputs(t, b, d, n, skip=variant != "no-skip", init=variant != "no-init")]  # fmt: skip
    if ins[6] is None:
        ins[6] = torch.zeros(b, d, n, dtype=torch.float64, device=DEVICE, requires_grad=True)
    y, h = SelectiveScanTriton.apply(*ins, chunk)
    y_ref, h_ref = selective_scan_ref(*ins)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    wy, wh = torch.randn_like(y_ref), torch.randn_like(h_ref)
    leaves = [v for v in ins if v is not None]
    g = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), leaves)
    g_ref = torch.autograd.grad((y_ref * wy).sum() + (h_ref * wh).sum(), leaves)
    for a, r in zip(g, g_ref, strict=True):
        assert r.abs().sum() > 0 or t == 1
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    # float32 tracks the float64 reference
    y32, _ = SelectiveScanTriton.apply(*[None if v is None else v.detach().float() for v in ins], chunk)
    torch.testing.assert_close(y32.double(), y_ref.detach(), rtol=1e-4, atol=1e-4)
    assert triton_scan_status() == "available"
    if DEVICE.type == "cuda":  # and selective_scan picks it on CUDA
        from tracetorch.ops.selective_scan import selective_scan

        y_sel, _ = selective_scan(*ins, chunk=chunk)
        assert y_sel.grad_fn is not None and "SelectiveScanTriton" in type(y_sel.grad_fn).__name__
