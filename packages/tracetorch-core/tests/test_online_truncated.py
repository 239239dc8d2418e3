"""tt.online.TruncatedLearner: truncated BPTT in windows for any stateful model. Stepping and whole-window
learning give the same weights as a plain TBPTT loop written with ``model.scan`` (bit for bit), gradients equal
BPTT's within a window from a non-zero start state, a stream stopped mid-window resumes bit-exactly from
safetensors, and what the learner keeps does not grow with the stream."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracetorch as tt
from tracetorch import snn

DT = torch.float64


def _models():
    torch.manual_seed(0)
    return {
        "lstm": tt.Model(tt.rnn.LSTM(3, 6), nn.Linear(6, 4)),
        "gru": tt.Model(tt.rnn.GRU(3, 6), nn.Linear(6, 4)),
        "mamba": tt.Model(nn.Linear(3, 8), tt.ssm.Mamba(8, d_state=4), nn.Linear(8, 4)),
        "snn": tt.Model(nn.Linear(3, 6), snn.LIB(6, 0.8), nn.Linear(6, 4), snn.LI(4, 0.7)),
    }


def _data(steps=23, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(steps, batch, 3, generator=g, dtype=DT), torch.randint(0, 4, (steps, batch), generator=g)


def _prime(model, seed=2):
    """Non-zero start states: run a few random steps without gradients."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.scan(torch.randn(7, 2, 3, generator=g, dtype=DT))


def _pair(name, lr=0.05):
    model = _models()[name].to(DT)
    _prime(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return model, opt


def _reference_tbptt(model, opt, xs, ys, window):
    """The plain loop: scan each window, mean CE over its steps, backward, SGD, detach; a trailing partial window
    is left without an update (its gradient never reaches the weights)."""
    outs = []
    full = xs.shape[0] // window * window
    for t in range(0, full, window):
        y = model.scan(xs[t : t + window])
        loss = torch.stack([F.cross_entropy(y[i], ys[t + i]) for i in range(window)]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tt.detach_states(model)
        outs.append(y.detach())
    with torch.no_grad():
        for t in range(full, xs.shape[0]):
            outs.append(model(xs[t]).unsqueeze(0))
    return torch.cat(outs)


@pytest.mark.parametrize("name", ["lstm", "gru", "mamba", "snn"])
@pytest.mark.parametrize("mode", ["step", "learn"])
def test_equals_a_plain_tbptt_loop(name, mode):
    xs, ys = _data()
    ref_model, ref_opt = _pair(name)
    want = _reference_tbptt(ref_model, ref_opt, xs, ys, window=5)

    model, opt = _pair(name)
    learner = tt.online.TruncatedLearner(model, opt, F.cross_entropy, window=5)
    if mode == "step":
        got = torch.stack([learner.step(x, y) for x, y in zip(xs, ys, strict=True)])
    else:
        got = learner.learn(xs, ys)
    assert learner.num_steps == 23 and learner.num_updates == 4
    for (k, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q), k  # the gradients come from the same scan: bit for bit
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)  # stepping vs scan: same numbers


@pytest.mark.parametrize("name", ["lstm", "mamba", "snn"])
def test_window_gradient_is_bptt_from_the_start_state(name):
    """Without an optimizer the gradients of the window stay in .grad: they equal autograd's through the window,
    including the dependence on nothing before it (the start state is a constant)."""
    xs, ys = _data(steps=6)
    model = _models()[name].to(DT)
    _prime(model)
    start = tt.save_states(model)
    learner = tt.online.TruncatedLearner(model, None, F.cross_entropy, window=6)
    for x, y in zip(xs, ys, strict=True):
        learner.step(x, y)
    got = {k: p.grad.clone() for k, p in model.named_parameters()}

    ref = _models()[name].to(DT)
    ref.load_state_dict(model.state_dict())
    tt.load_states(ref, start)
    y = ref.scan(xs)
    loss = sum(F.cross_entropy(y[t], ys[t]) for t in range(6)) / 6
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for (k, g), w in zip(got.items(), grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=k)
    torch.testing.assert_close(learner.last_loss, loss.detach())


def test_stop_mid_window_and_resume_is_bit_exact(tmp_path):
    xs, ys = _data(steps=31)
    model, opt = _pair("mamba")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    learner = tt.online.TruncatedLearner(model, opt, F.cross_entropy, window=8, clip_grad_norm=1.0)
    full = torch.stack([learner.step(x, y) for x, y in zip(xs, ys, strict=True)])

    model2, _ = _pair("mamba")
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.01)
    a = tt.online.TruncatedLearner(model2, opt2, F.cross_entropy, window=8, clip_grad_norm=1.0)
    first = [a.step(x, y) for x, y in zip(xs[:13], ys[:13], strict=True)]  # 13 = one window + 5 steps
    a.save_states(tmp_path / "stream.safetensors")
    torch.save({"learner": a.state_dict(), "opt": opt2.state_dict()}, tmp_path / "train.pt")

    model3 = _models()["mamba"].to(DT)
    opt3 = torch.optim.Adam(model3.parameters(), lr=0.01)
    b = tt.online.TruncatedLearner(model3, opt3, F.cross_entropy, window=8, clip_grad_norm=1.0)
    saved = torch.load(tmp_path / "train.pt", weights_only=True)
    b.load_state_dict(saved["learner"])
    opt3.load_state_dict(saved["opt"])
    b.load_states(tmp_path / "stream.safetensors")
    assert b.num_steps == 13 and b.num_updates == 1
    rest = [b.step(x, y) for x, y in zip(xs[13:], ys[13:], strict=True)]
    assert torch.equal(torch.stack(first + rest), full)
    for p, q in zip(model3.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
    for (k, s), t in zip(tt.get_states(b).items(), tt.get_states(learner).values(), strict=True):
        assert (s is None and t is None) or torch.equal(s, t), k


def test_what_it_keeps_does_not_grow_with_the_stream():
    model, opt = _pair("lstm")
    learner = tt.online.TruncatedLearner(model, opt, F.cross_entropy, window=4)
    xs, ys = _data(steps=50)
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        learner.step(x, y)
        states = tt.get_states(learner)
        assert states["buffer.inputs"] is None or states["buffer.inputs"].shape[0] == (t + 1) % 4
        for k, s in states.items():
            assert s is None or not s.requires_grad, k  # no autograd graph survives a step
    assert learner.num_updates == 12


def test_zero_states_starts_a_new_stream():
    model, _ = _pair("gru")
    learner = tt.online.TruncatedLearner(model, None, F.cross_entropy, window=4)
    xs, ys = _data(steps=3)
    for x, y in zip(xs, ys, strict=True):
        learner.step(x, y)
    tt.zero_states(learner)
    assert all(v is None for v in tt.get_states(learner).values())
    fresh = _models()["gru"].to(DT)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(learner.step(xs[0], ys[0]), fresh(xs[0]))


def test_a_model_without_scan_replays_step_by_step():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 6).to(DT), tt.rnn.GRU(6, 4).to(DT))
    ref = nn.Sequential(nn.Linear(3, 6).to(DT), tt.rnn.GRU(6, 4).to(DT))
    ref.load_state_dict(seq.state_dict())
    xs, ys = _data(steps=8)
    learner = tt.online.TruncatedLearner(seq, torch.optim.SGD(seq.parameters(), lr=0.1), F.cross_entropy, window=4)
    learner.learn(xs, ys)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for t in (0, 4):
        y = torch.stack([ref(x) for x in xs[t : t + 4]])
        torch.stack([F.cross_entropy(y[i], ys[t + i]) for i in range(4)]).mean().backward()
        opt.step()
        opt.zero_grad()
        tt.detach_states(ref)
    for p, q in zip(seq.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_clear_errors():
    model, opt = _pair("lstm")
    with pytest.raises(ValueError, match="window must be a positive int"):
        tt.online.TruncatedLearner(model, opt, F.cross_entropy, window=0)
    with pytest.raises(ValueError, match="no hidden states"):
        tt.online.TruncatedLearner(nn.Linear(3, 4), None, F.cross_entropy)
    learner = tt.online.TruncatedLearner(model, opt)
    xs, ys = _data(steps=3)
    with pytest.raises(ValueError, match="needs a loss"):
        learner.step(xs[0], ys[0])
    learner = tt.online.TruncatedLearner(model, opt, F.cross_entropy, window=4)
    learner.step(xs[0], ys[0])
    with pytest.raises(ValueError, match="no target in the middle"):
        learner.step(xs[1])
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        learner.learn(xs, ys[:2])
    with pytest.raises(TypeError, match=r"use learner\.step"):
        learner(xs[0])
