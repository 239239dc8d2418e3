"""tt.online trace learning and reward learning: the trace rule's update equals its documented formula (one
and two layers, the decay stored through its logit), the REFLECT signal goes through log_softmax, the exact
reward engine equals autograd's REINFORCE gradient with fixed samples (scalar and per-sample rewards, with
and without discounting), state shapes do not depend on the number of steps, and stop/resume is bit-exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import snn

DT = torch.float64


def _lif_model(seed=0):
    torch.manual_seed(seed)
    return tt.Model(nn.Linear(3, 4), snn.LIB(4, 0.8), nn.Linear(4, 2), snn.LI(2, 0.7)).to(DT)


# ------------------------------------------------------------------------------------------- trace learning
def test_in_trace_decay_is_stored_as_its_logit():
    """The original (v0.2-v0.3) stored 0.9 raw, so the decay in effect was sigmoid(0.9) = 0.711."""
    learner = tt.online.TraceLearner(_lif_model(), in_trace_decay=0.9)
    d = learner.units[0].in_trace_decay.item()
    assert abs(d - 0.9) < 1e-6
    xs = torch.randn(5, 2, 3, dtype=DT)
    for x in xs:
        learner.step(x)
    e = sum(0.9 ** (4 - t) * xs[t] for t in range(5))
    torch.testing.assert_close(learner.units[0].in_trace, e, rtol=1e-6, atol=1e-7)


def test_trace_update_equals_the_documented_formula():
    """Linear(3, 4) + LIB(4): W.grad, b.grad, beta's and the threshold's gradients from the hand-written formula."""
    torch.manual_seed(1)
    lin, lif = nn.Linear(3, 4).to(DT), snn.LIB(4, 0.8, 1.2).to(DT)
    lif.bias = torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=DT)
    model = tt.Model(lin, lif)
    d = 0.95
    learner = tt.online.TraceLearner(model, in_trace_decay=d, loss_fn=lambda f, lam: (f * lam).sum())
    xs = torch.rand(20, 2, 3, dtype=DT)
    lam = torch.randn(2, 4, dtype=DT)  # the learning signal dL/df
    for x in xs[:-1]:
        learner.step(x)
    learner.step(xs[-1], lam)

    dd = torch.sigmoid(torch.logit(torch.tensor(d, dtype=torch.float64)).to(torch.float32)).to(DT)
    e = sum(dd ** (19 - t) * xs[t] for t in range(20))
    i_bar = (1 - dd) * e
    beta, theta, bias = lif.beta.detach(), lif.threshold.detach(), lif.bias.detach()
    W, b = lin.weight.detach(), lin.bias.detach()
    drive = i_bar @ W.T + b
    v = 5 * ((1 - beta / 2) * drive - (1 - beta) * (theta - bias))
    f = torch.sigmoid(v)
    g = lam * f * (1 - f) * 5  # d<lam, f>/dv
    torch.testing.assert_close(lin.weight.grad, (g * (1 - beta / 2)).T @ i_bar)
    torch.testing.assert_close(lin.bias.grad, (g * (1 - beta / 2)).sum(0))
    # beta through sigmoid(raw), threshold through softplus(raw)
    dbeta = (g * (-drive / 2 + (theta - bias))).sum(0)
    torch.testing.assert_close(lif.raw_beta.grad, dbeta * beta * (1 - beta))
    dtheta = (g * -(1 - beta)).sum(0)
    torch.testing.assert_close(lif.raw_threshold.grad, dtheta * torch.sigmoid(lif.raw_threshold.detach()))
    torch.testing.assert_close(lif.raw_bias.grad, (g * (1 - beta)).sum(0))


def test_signal_passes_to_the_layer_below():
    """Two units: the lower W gets W_top^T (top signal at the drive) times its own proxy derivative, with the
    top unit's value computed from its own trace (the average of the hidden spikes)."""
    model = _lif_model(2)
    l1, s1, l2, s2 = list(model.children())
    learner = tt.online.TraceLearner(model, in_trace_decay=[0.9, 0.8], loss_fn=lambda z, lam: (z * lam).sum())
    xs = torch.rand(15, 2, 3, dtype=DT) * 3
    lam = torch.randn(2, 2, dtype=DT)
    for x in xs:
        learner.step(x)
    learner.learn(lam)
    u0, u1 = learner.units
    i0 = (1 - u0.in_trace_decay.to(DT)) * u0.in_trace
    i1 = (1 - u1.in_trace_decay.to(DT)) * u1.in_trace
    beta2 = s2.beta.detach()
    g_drive2 = lam / (1 - beta2)  # top: LI rate I / (1 - beta)
    torch.testing.assert_close(l2.weight.grad, g_drive2.T @ i1)
    signal1 = g_drive2 @ l2.weight.detach()  # d loss / d i1, handed down as d loss / d f1
    beta1, th1 = s1.beta.detach(), s1.threshold.detach()
    drive1 = i0 @ l1.weight.detach().T + l1.bias.detach()
    f1 = torch.sigmoid(5 * ((1 - beta1 / 2) * drive1 - (1 - beta1) * th1))
    g1 = signal1 * f1 * (1 - f1) * 5 * (1 - beta1 / 2)
    torch.testing.assert_close(l1.weight.grad, g1.T @ i0)


def test_li_rate_is_the_exact_average_for_a_constant_input():
    lin, li = nn.Linear(3, 2).to(DT), snn.LI(2, 0.6).to(DT)
    learner = tt.online.TraceLearner(tt.Model(lin, li), in_trace_decay=0.5)
    x = torch.randn(1, 3, dtype=DT)
    for _ in range(200):
        y = learner.step(x)
    with torch.no_grad():
        torch.testing.assert_close(learner.window(), y)


def test_trace_states_constant_size_zero_and_unsupported():
    learner = tt.online.TraceLearner(_lif_model(), loss_fn=nn.functional.cross_entropy)

    def shapes(n):
        tt.zero_states(learner)
        for _ in range(n):
            learner.step(torch.randn(2, 3, dtype=DT))
        learner.learn(torch.tensor([0, 1]))
        return {k: tuple(v.shape) for k, v in tt.get_states(learner).items()}

    assert shapes(3) == shapes(300)
    assert shapes(3)["units.0.in_trace"] == (2, 3)
    learner.model.zero_states()  # zeroing only the model restarts the traces too
    learner.step(x := torch.randn(2, 3, dtype=DT))
    assert torch.equal(learner.units[0].in_trace, x)
    for bad in (tt.Model(nn.Linear(3, 4), snn.RLIB(4)), tt.Model(snn.DLIB(3)), tt.Model(tt.rnn.GRU(3, 3))):
        with pytest.raises(tt.online.UnsupportedLayerError):
            tt.online.TraceLearner(bad)


def test_trace_learning_learns_a_rate_task():
    """Which of two input channels fires more: solved from averaged traces alone."""
    torch.manual_seed(0)
    model = tt.Model(nn.Linear(2, 8), snn.LIB(8), nn.Linear(8, 2), snn.LI(2, 0.9))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    learner = tt.online.TraceLearner(model, opt, nn.functional.cross_entropy, in_trace_decay=0.95)
    accs = []
    for _ in range(60):
        tt.zero_states(learner)
        label = torch.randint(0, 2, (16,))
        rates = torch.where(nn.functional.one_hot(label, 2).bool(), 0.6, 0.2)
        for _ in range(30):
            learner.step(torch.bernoulli(rates))
        accs.append((learner.window().argmax(-1) == label).float().mean().item())
        learner.learn(label)
    assert sum(accs[-10:]) / 10 > 0.9


def _trace_make(seed):
    model = _lif_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt, tt.online.TraceLearner(model, opt, nn.functional.cross_entropy, in_trace_decay=0.9)


def test_trace_stop_and_resume_bit_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(12, 2, 3, generator=g, dtype=DT)
    tgt = torch.tensor([1, 0])
    model, opt, learner = _trace_make(0)
    for t, x in enumerate(xs[:6]):
        learner.step(x, tgt if t % 3 == 2 else None)
    learner.save_states(tmp_path / "s.safetensors")
    torch.save({"l": learner.state_dict(), "o": opt.state_dict()}, tmp_path / "t.pt")
    ys = [learner.step(x, tgt if t % 3 == 2 else None) for t, x in enumerate(xs[6:])]
    model2, opt2, learner2 = _trace_make(7)
    ck = torch.load(tmp_path / "t.pt", weights_only=False)
    learner2.load_state_dict(ck["l"])
    opt2.load_state_dict(ck["o"])
    learner2.load_states(tmp_path / "s.safetensors")
    assert learner2.num_updates == 2
    ys2 = [learner2.step(x, tgt if t % 3 == 2 else None) for t, x in enumerate(xs[6:])]
    assert all(torch.equal(a, b) for a, b in zip(ys, ys2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))


# ------------------------------------------------------------------------------------------- reward learning
def _policy(seed=0):
    torch.manual_seed(seed)
    return tt.Model(nn.Linear(3, 3), snn.SLI(3, 0.6, 0.8)).to(DT)


@pytest.mark.parametrize("decay", [1.0, 0.7])
@pytest.mark.parametrize("per_sample", [False, True])
def test_exact_reward_gradient_equals_reinforce(decay, per_sample):
    """Fixed actions at some steps, one reward at the end: the learner's .grad equals autograd's REINFORCE
    gradient -mean_b A_b sum_t decay^(T-1-t) grad log pi(a_bt) through the whole episode."""
    model = _policy()
    T, B = 9, 4
    x = torch.randn(T, B, 3, dtype=DT)
    acts = torch.randint(0, 3, (T, B), generator=torch.Generator().manual_seed(1))
    acting = [1, 4, 5, 8]
    r = torch.tensor([1.0, 0.0, 0.5, -1.0], dtype=DT) if per_sample else 0.75
    learner = tt.online.RewardLearner(model, engine="exact", decay=decay, baseline_decay=0.5)
    learner.baseline.fill_(0.2)
    for t in range(T):
        if t in acting:
            learner.step(x[t], r if t == T - 1 else None, action=acts[t])
        else:
            learner.observe(x[t])
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    tt.zero_states(model)
    logp = torch.log_softmax(model.scan(x), -1)  # [T, B, A]
    adv = torch.as_tensor(r, dtype=DT).expand(B) - 0.2
    score = sum(decay ** (T - 1 - t) * logp[t].gather(-1, acts[t, :, None]).squeeze(-1) for t in acting)
    (-(adv * score).sum() / B).backward()
    for a, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)
    # the baseline moves after its use
    assert abs(learner.baseline.item() - (0.5 * 0.2 + 0.5 * adv.add(0.2).mean().item())) < 1e-12


def test_reflect_signal_goes_through_log_softmax():
    """REFLECT (engine='trace'): the top W's gradient is -A o^T-weighted log_softmax'(z) times the averaged
    input / (1 - beta), i.e. the signal -A o is w.r.t. log-probabilities (the original's bug: w.r.t. p)."""
    torch.manual_seed(3)
    lin, li = nn.Linear(3, 3).to(DT), snn.LI(3, 0.5).to(DT)
    learner = tt.online.RewardLearner(tt.Model(lin, li), engine="trace", decay=0.6, in_trace_decay=0.8)
    xs = torch.randn(6, 2, 3, dtype=DT)
    acts = torch.tensor([[0, 2], [1, 1], [2, 0]])
    for t in range(3):
        learner.observe(xs[t])
    for t in range(3, 6):
        learner.step(xs[t], 1.0 if t == 5 else None, action=acts[t - 3])
    o = sum(0.4 * 0.6 ** (5 - t) * nn.functional.one_hot(acts[t - 3], 3).to(DT) for t in range(3, 6))
    u = learner.tracer.units[0]
    i_bar = (1 - u.in_trace_decay.to(DT)) * u.in_trace
    beta = li.beta.detach()
    z = (i_bar @ lin.weight.detach().T + lin.bias.detach()) / (1 - beta)
    p = torch.softmax(z, -1)
    g_z = -1.0 * (o - p * o.sum(-1, keepdim=True)) / 2  # d/dz of -A sum o log_softmax(z) / B
    torch.testing.assert_close(lin.weight.grad, (g_z / (1 - beta)).T @ i_bar)
    torch.testing.assert_close(learner.action_trace, o)


@pytest.mark.parametrize("engine", ["exact", "trace"])
def test_reward_stop_and_resume_bit_exact(tmp_path, engine):
    def make(seed):
        torch.manual_seed(seed)
        model = tt.Model(nn.Linear(3, 5), snn.LIB(5), nn.Linear(5, 2), snn.LI(2, 0.8)).to(DT)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        kw = {"decay": 0.9} if engine == "trace" else {}
        return model, opt, tt.online.RewardLearner(model, opt, engine=engine, seed=5, **kw)

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(14, 3, 3, generator=g, dtype=DT) * 2

    def run(learner, steps):
        out = []
        for t, x in steps:
            out.append(learner.step(x, torch.tensor([1.0, 0.0, 0.5]) if t % 4 == 3 else None))
        return out

    model, opt, learner = make(0)
    run(learner, list(enumerate(xs))[:6])  # mid-episode: eligibility pending
    learner.save_states(tmp_path / "s.safetensors")
    torch.save({"l": learner.state_dict(), "o": opt.state_dict()}, tmp_path / "t.pt")
    a1 = run(learner, list(enumerate(xs))[6:])
    model2, opt2, learner2 = make(9)
    ck = torch.load(tmp_path / "t.pt", weights_only=False)
    learner2.load_state_dict(ck["l"])
    opt2.load_state_dict(ck["o"])
    learner2.load_states(tmp_path / "s.safetensors")
    a2 = run(learner2, list(enumerate(xs))[6:])
    assert all(torch.equal(a, b) for a, b in zip(a1, a2, strict=True))
    assert torch.equal(learner.baseline, learner2.baseline)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))


@pytest.mark.parametrize("engine", ["exact", "trace"])
def test_reward_state_shapes_do_not_grow(engine):
    model = tt.Model(nn.Linear(3, 5), snn.LIB(5), nn.Linear(5, 2), snn.LI(2))
    learner = tt.online.RewardLearner(model, engine=engine, decay=0.9)

    def shapes(n):
        tt.zero_states(learner)
        for _ in range(n):
            learner.observe(torch.randn(4, 3))
        learner.step(torch.randn(4, 3), torch.ones(4))
        return {k: tuple(v.shape) for k, v in tt.get_states(learner).items()}

    assert shapes(2) == shapes(200)


@pytest.mark.parametrize("engine", ["exact", "trace"])
def test_reward_learning_learns_a_bandit_with_state(engine):
    """Answer which channel was on (seen only in the first steps) from rewards alone."""
    torch.manual_seed(0)
    model = tt.Model(nn.Linear(2, 2), snn.LI(2, 0.9))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    learner = tt.online.RewardLearner(model, opt, engine=engine, decay=0.5, in_trace_decay=0.9, seed=1)
    rewards = []
    for _ in range(80):
        tt.zero_states(learner)
        label = torch.randint(0, 2, (16,))
        x = nn.functional.one_hot(label, 2).float()
        for _ in range(5):
            learner.observe(x)
        a = learner.step(x * 0)
        r = (a == label).float()
        learner.reward(r)
        rewards.append(r.mean().item())
    assert sum(rewards[-10:]) / 10 > 0.85
