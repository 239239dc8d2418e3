"""The CUDA path (skipped without a GPU; CI has none, so these run on a lent GPU machine): every layer family
gives the CPU's numbers on the GPU (outputs, final states, every gradient, in float64) and scan == step loop
there; states follow the model between devices, save from the GPU and load on the CPU (and back) with the
stream continuing bit-identically on the device that saved them; the online learner's gradients equal BPTT on
the GPU; float32 and bfloat16 autocast training steps run and stay finite."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import assert_same_run, run
from test_snn_types import random_params
from test_ssm import scan_inputs
from torch import nn

import tracetorch as tt
from tracetorch import functional as F
from tracetorch import rnn, snn, ssm
from tracetorch.ops.selective_scan import selective_scan, selective_scan_ref

# TT_TEST_DEVICE=cpu runs the same checks on the CPU (to test the tests); another accelerator type works too
CUDA = torch.device(os.environ.get("TT_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
DT = torch.float64
ALL = list(F.NAMES)
RNNS = {
    "rnn-tanh": lambda: rnn.SimpleRNN(4, 6),
    "lstm": lambda: rnn.LSTM(4, 6),
    "gru": lambda: rnn.GRU(4, 6),
}
SSMS = {
    "s4d": lambda: ssm.S4D(4, 4),
    "s6": lambda: ssm.S6(4, 3),
    "mamba": lambda: ssm.Mamba(4, 3, d_conv=3, expand=2),
}


def on(device, layer, x, initial, mode):
    """``run`` with the layer, input and initial states on ``device``; results back on the CPU."""
    layer = copy.deepcopy(layer).to(device)
    init = None if initial is None else {k: v.to(device) for k, v in initial.items()}
    y, finals, grads = run(layer, x.to(device), init, mode)
    for v in [y, *finals.values(), *grads.values()]:
        assert v is None or v.device.type == device.type, "a result left the device"
    cpu = lambda d: {k: None if v is None else v.cpu() for k, v in d.items()}  # noqa: E731
    return y.cpu(), cpu(finals), cpu(grads)


def spiking_layer(name, n=5):
    kwargs = random_params(name, n, torch.Generator().manual_seed(len(name) * 7 + 1))
    if F.NeuronSpec.from_name(name).fires:
        kwargs["spike_fn"] = "sigmoid"
    return getattr(snn, name)(n, **kwargs).double()


def random_initial(layer, step_shape):
    probe = copy.deepcopy(layer)
    probe(torch.zeros(step_shape, dtype=DT))
    out = {}
    for k, v in probe.get_states().items():
        r = torch.randn_like(v) * 0.5
        out[k] = r.abs() if k.startswith("pos_") else -r.abs() if k.startswith("neg_") else r
    return out


@pytest.mark.parametrize("name", ALL)
def test_spiking_types_on_cuda_match_cpu(name):
    layer = spiking_layer(name)
    x = torch.randn(12, 3, 5, dtype=DT) * 1.5
    for initial in (None, random_initial(layer, (3, 5))):
        cpu = on(torch.device("cpu"), layer, x, initial, "scan")
        gpu = on(CUDA, layer, x, initial, "scan")
        gpu_steps = on(CUDA, layer, x, initial, "steps")
        assert_same_run(gpu, gpu_steps, exact_outputs=False, rtol=1e-9, atol=1e-12)
        assert_same_run(cpu, gpu, exact_outputs=False, rtol=1e-9, atol=1e-12)
        if layer.spec.fires:
            assert cpu[0].abs().sum() > 0  # some spikes, so the comparison covers resets


@pytest.mark.parametrize("name", ["LIB", "RLIT", "DSLITS", "LIEMA"])
def test_spiking_streaming_on_cuda(name):
    layer = spiking_layer(name).to(CUDA)
    x = torch.randn(10, 3, 5, dtype=DT, device=CUDA) * 1.5
    with torch.no_grad():
        layer.zero_states()
        ys = torch.stack([layer(xt) for xt in x.unbind(0)])
        ref = copy.deepcopy(layer)
        ref.zero_states()
        yr = ref.scan(x)
    torch.testing.assert_close(ys, yr, rtol=1e-9, atol=1e-12)
    assert all(v.device.type == CUDA.type for v in layer.get_states().values())


@pytest.mark.parametrize("kind", [*RNNS, *SSMS])
def test_rnn_and_ssm_layers_on_cuda_match_cpu(kind):
    layer = (RNNS | SSMS)[kind]().double()
    x = torch.randn(40, 3, 4, dtype=DT)
    probe = copy.deepcopy(layer)
    probe(x[0])
    initial = {k: torch.randn_like(v) * 0.5 for k, v in probe.get_states().items()}
    for init in (None, initial):
        cpu = on(torch.device("cpu"), layer, x, init, "scan")
        gpu = on(CUDA, layer, x, init, "scan")
        gpu_steps = on(CUDA, layer, x, init, "steps")
        assert_same_run(gpu, gpu_steps, exact_outputs=False, rtol=1e-9, atol=1e-11)
        assert_same_run(cpu, gpu, exact_outputs=False, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_selective_scan_on_cuda_matches_reference(chunk):
    ins = [v.detach().to(CUDA).requires_grad_(True) for v in scan_inputs(50, 2, 6, 4)]
    y, h = selective_scan(*ins, chunk=chunk)
    y_ref, h_ref = selective_scan_ref(*ins)
    torch.testing.assert_close(y, y_ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-11, atol=1e-12)
    wy, wh = torch.randn_like(y), torch.randn_like(h)
    g1 = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), ins)
    g2 = torch.autograd.grad((y_ref * wy).sum() + (h_ref * wh).sum(), ins)
    for a, b_ in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b_, rtol=1e-9, atol=1e-11)


def mixed_model():
    torch.manual_seed(3)
    return tt.Model(
        nn.Linear(6, 8), snn.LIB(8, beta=0.9), rnn.LSTM(8, 8), ssm.Mamba(8, 4, d_conv=3, expand=2), nn.Linear(8, 3)
    )


def test_states_follow_the_model_and_files_cross_devices(tmp_path):
    model = mixed_model().double().to(CUDA)
    x = torch.randn(20, 2, 6, dtype=DT, device=CUDA)
    with torch.no_grad():
        model.scan(x[:10])
        states = model.get_states()
        assert states and all(v.device.type == CUDA.type for v in states.values())
        model.save_states(tmp_path / "s.safetensors")
        y_gpu = model.scan(x[10:])
        # the same stream continued on the CPU from the GPU's file
        cpu = copy.deepcopy(model).cpu()
        assert all(v.device.type == "cpu" for v in cpu.get_states().values())  # states moved with .cpu()
        cpu.zero_states()
        cpu.load_states(tmp_path / "s.safetensors")
        y_cpu = cpu.scan(x[10:].cpu())
        torch.testing.assert_close(y_cpu, y_gpu.cpu(), rtol=1e-9, atol=1e-11)
        # and back: the file loads onto the GPU and the GPU's continuation is bit-identical
        model.zero_states()
        model.load_states(tmp_path / "s.safetensors")
        assert all(v.device.type == CUDA.type for v in model.get_states().values())
        assert torch.equal(model.scan(x[10:]), y_gpu)


def test_online_learner_equals_bptt_on_cuda():
    torch.manual_seed(0)
    model = tt.Model(nn.Linear(3, 5), snn.RLIB(5, beta=0.8, gamma=0.7, spike_fn="sigmoid")).double().to(CUDA)
    x = torch.randn(15, 2, 3, dtype=DT, device=CUDA)
    w = torch.randn(15, 2, 5, dtype=DT, device=CUDA)
    model.zero_states()
    (model.scan(x) * w).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.zero_states()
    learner = tt.online.OnlineLearner(model, loss_fn=lambda out, wt: (out * wt).sum())
    for xt, wt in zip(x.unbind(0), w.unbind(0), strict=True):
        learner.step(xt, wt)
    for n, p in model.named_parameters():
        assert p.grad.device.type == CUDA.type
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-9, atol=1e-11, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("autocast", [False, True])
def test_float32_and_bf16_autocast_training_on_cuda(autocast):
    model = mixed_model().to(CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(32, 4, 6, device=CUDA)
    target = torch.randn(32, 4, 3, device=CUDA)
    losses = []
    for _ in range(3):
        model.zero_states()
        with torch.autocast(CUDA.type, dtype=torch.bfloat16, enabled=autocast):
            y = model.scan(x)
            loss = nn.functional.mse_loss(y.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(v.dtype == torch.float32 for v in model.get_states().values())  # states kept float32
    with torch.no_grad():
        model.scan(x[:4])  # and the stream continues without autocast
    if not autocast:  # float32 on the device tracks the CPU's float64 (a spike-free model: no threshold flips)
        smooth = tt.Model(*[m for m in model if not isinstance(m, snn.SpikingLayer)])
        smooth.zero_states()
        ref = copy.deepcopy(smooth).double().cpu()
        ref.zero_states()
        with torch.no_grad():
            y32 = smooth.scan(x)
            y64 = ref.scan(x.double().cpu())
        assert (y32.double().cpu() - y64).abs().max() <= 1e-3 * (1 + y64.abs().max())
