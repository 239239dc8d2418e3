"""One backend switch (``tracetorch.ops.backend``): what it allows runs, the numbers do not change, and ``explain``
says which kernel runs and why."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

import tracetorch as tt
from tracetorch.ops import backend, fire
from tracetorch.ops.fire import native

NATIVE = native.native_available()


@pytest.fixture
def calls(monkeypatch):
    """Counts the native kernel calls (sequence forward, streaming steps)."""
    n = {"native": 0}
    for name in ("fire_forward", "lif_step", "fire_step"):
        fn = getattr(native, name)

        def counted(*a, _fn=fn, **k):
            n["native"] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(native, name, counted)
    return n


def _stream_and_scan(layer, x):
    """No-grad stream, then scan with gradients: outputs, final states, input gradient."""
    a = copy.deepcopy(layer)
    with torch.no_grad():
        ys = torch.stack([a(xt) for xt in x.unbind(0)])
    b = copy.deepcopy(layer)
    xg = x.clone().requires_grad_()
    y = b.scan(xg)
    y.sum().backward()
    return ys, tt.get_states(a), y.detach(), tt.get_states(b), xg.grad


@pytest.mark.parametrize("name", ["torch", "reference"])
def test_every_backend_gives_the_same_numbers_and_only_its_kernels_run(name, calls):
    torch.manual_seed(0)
    layers = [tt.snn.LIB(6), tt.snn.SRLIT(6), tt.snn.DSLITS(6), tt.snn.LI(6), tt.rnn.LSTM(6, 5), tt.ssm.Mamba(6, 3)]
    x = torch.randn(12, 3, 6) * 1.5
    for layer in layers:
        auto = _stream_and_scan(layer, x)
        calls["native"] = 0
        with backend.use_backend(name):
            assert backend.backend() == name
            if name == "reference":  # no fused or streaming path may run
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(fire, "fire_sequence", None)
                    got = _stream_and_scan(layer, x)
            else:
                got = _stream_and_scan(layer, x)
        assert backend.backend() == "auto"
        assert calls["native"] == 0, f"{type(layer).__name__}: a native kernel ran under backend {name!r}"
        # spikes are bit-identical on every path; gradients and continuous outputs agree to rounding (the native
        # backward sums in another order, ATen's sequence ops and the scans are not the step loop's ops)
        exact = isinstance(layer, tt.snn.SpikingLayer) and layer.spec.fires
        for i, (a, b) in enumerate(zip(auto, got, strict=True)):
            if isinstance(a, dict):
                assert a.keys() == b.keys()
                for k in a:
                    torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
            elif exact and i in (0, 2):
                assert torch.equal(a, b), f"{type(layer).__name__}: spikes differ under backend {name!r}"
            else:
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not NATIVE, reason="no native kernels on this machine")
def test_a_change_of_backend_mid_stream_replans(calls):
    layer = tt.snn.LIB(8)
    x = torch.randn(6, 2, 8) * 2
    ref = copy.deepcopy(layer)
    with torch.no_grad():
        for xt in x[:3]:
            layer(xt)
        assert calls["native"] >= 1 and layer.__dict__["_stream_fast"] is not None  # streaming on the native step
        with backend.use_backend("torch"):
            ys = [layer(xt) for xt in x[3:]]
            assert layer.__dict__["_stream_fast"] is None and layer.__dict__["_stream_cache"][3:5] == (None, None)
        want = torch.stack([ref(xt) for xt in x])[3:]
    assert torch.equal(torch.stack(ys), want)


def test_explain_names_the_kernel_and_the_reason():
    x = torch.zeros(2, 8)
    lib = backend.explain(tt.snn.LIB(8), x)
    assert set(lib) == {"scan", "step", "step (no grad)"}
    if NATIVE:
        assert lib["scan"] == "native C kernel (tracetorch.ops.fire.native, variant b, float32)"
    if NATIVE:
        assert (
            "variant dtsr, float32); the synaptic stage: tracetorch.ops.trace"
            in backend.explain(tt.snn.DSRLITS(8), x)["scan"]
        )
    assert "float16 (the native kernels take" in backend.explain(tt.snn.DLIB(8), x.half())["scan"]
    assert "spike mode 'smooth'" in backend.explain(tt.snn.LIB(8, spike_fn="smooth"), x)["scan"]
    assert "custom spike callable" in backend.explain(tt.snn.LIB(8, spike_fn=torch.sigmoid), x)["scan"]
    assert "torch.lstm" in backend.explain(tt.rnn.LSTM(8, 4), x)["scan"]
    assert "MambaStream" in backend.explain(tt.ssm.Mamba(8, 4), x)["step (no grad)"]
    with backend.use_backend("torch"):
        assert "backend 'torch' forbids" in backend.explain(tt.snn.LIB(8), x)["scan"]
        assert native.native_status() == "disabled by backend 'torch'"
    with backend.use_backend("reference"):
        assert set(backend.explain(tt.ssm.S6(8, 4), x).values()) == {"reference step loop (backend 'reference')"}

    class Mine(tt.snn.LIB):
        def step(self, x, state, params):
            return super().step(2 * x, state, params)

    assert "Mine overrides" in backend.explain(Mine(8), x)["scan"]
    with pytest.raises(TypeError, match="explain takes a tracetorch layer"):
        backend.explain(torch.nn.Linear(2, 2), x)


def test_bad_backend_names_are_refused():
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch', 'reference'"):
        backend.set_backend("fast")
    assert backend.backend() == "auto"


def _python(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACETORCH_") or k == "TRACETORCH_CACHE"}
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          env={**clean, **env})  # fmt: skip


def test_the_environment_chooses_and_the_old_switches_still_work():
    code = "from tracetorch.ops import backend; from tracetorch.ops.fire import native; "
    code += "print(backend.backend(), '|', native.native_status())"
    out = _python({"TRACETORCH_BACKEND": "torch"}, code)
    assert out.returncode == 0 and out.stdout.strip() == "torch | disabled by backend 'torch'", out.stderr
    out = _python({"TRACETORCH_BACKEND": "Fast"}, code)
    assert out.returncode != 0 and "TRACETORCH_BACKEND: tracetorch backend must be one of" in out.stderr
    out = _python({"TRACETORCH_NATIVE": "0"}, code)
    assert out.stdout.strip() == "auto | disabled by TRACETORCH_NATIVE=0", out.stderr
    assert "TRACETORCH_NATIVE=0 is deprecated: use TRACETORCH_BACKEND=torch" in out.stderr
