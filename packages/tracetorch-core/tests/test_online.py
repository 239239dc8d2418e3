"""tt.online: exact online gradients (eligibility traces) equal BPTT through ``scan`` for every one of the 32
spiking types, with and without a bundled input Linear, learnable per-neuron or scalar or fixed parameters,
non-zero initial states and a loss at every step; the learner's API, its hidden states (zero, save, load,
bit-exact resume), constant memory, and clear errors for layers it cannot trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import functional as F
from tracetorch import snn

DT = torch.float64


def _layer(name, n, dtype=DT, **kw):
    spec = F.NeuronSpec.from_name(name)
    if not spec.fires:
        kw.pop("spike_fn", None)
        kw.pop("detach_reset", None)
    layer = getattr(snn, name)(n, **kw).to(dtype)
    g = torch.Generator().manual_seed(len(name))
    for p in layer.parameter_names:
        raw = layer.raw(p)
        shape = raw.shape
        kind = layer._constraints[p].name
        if kind == "sigmoid":
            v = torch.rand(shape, generator=g, dtype=dtype) * 0.8 + 0.1
        elif kind == "softplus":
            v = torch.rand(shape, generator=g, dtype=dtype) + 0.3
        else:
            v = torch.randn(shape, generator=g, dtype=dtype) * 0.5
        layer.set_parameter(p, v)
    return layer


def _online_vs_bptt(model, layers, x, w, init):
    """Per-step loss sum(y_t * w_t). Returns (BPTT outputs, grads) and (online outputs, grads)."""

    def set_init():
        tt.zero_states(model)
        for layer, states in zip(layers, init, strict=True):
            for n, v in states.items():
                layer._states[n] = v.clone()

    set_init()
    y = model.scan(x)
    (y * w).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    set_init()
    learner = tt.online.OnlineLearner(model, loss_fn=lambda out, wt: (out * wt).sum())
    ys = torch.stack([learner.step(xt, wt) for xt, wt in zip(x.unbind(0), w.unbind(0), strict=True)])
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    return (y.detach(), ref), (ys, got)


def _assert_close(a, b, rtol=1e-10, atol=1e-12, exact_outputs=True):
    """Outputs bit for bit where the model is the spiking layers alone; with an ``nn.Linear`` in it to rounding, since
    a matmul over all steps at once (``scan``) and one per step need not round alike (MKL on AVX-512 does not)."""
    (ya, ga), (yb, gb) = a, b
    if exact_outputs:
        assert torch.equal(ya, yb), f"outputs differ by {(ya - yb).abs().max().item():g}"
    else:
        torch.testing.assert_close(yb, ya, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys()
    # a parameter may get no gradient when no spike of its polarity occurred; most must, or nothing is tested
    silent = [k for k in ga if not ga[k].abs().sum() > 0]
    assert len(silent) <= 2, f"BPTT gradients are zero for {silent}: the test checks too little"
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"grad {k}: {m}")


@pytest.mark.parametrize("linear", [False, True], ids=["layer", "linear+layer"])
@pytest.mark.parametrize("name", list(F.NAMES))
def test_online_gradients_equal_bptt_for_every_type(name, linear):
    n, m, b, t = 3, 4, 2, 7
    layer = _layer(name, n)
    model = tt.Model(nn.Linear(m, n).to(DT), layer) if linear else tt.Model(layer)
    x = torch.randn(t, b, m if linear else n, dtype=DT) * 1.5
    w = torch.randn(t, b, n, dtype=DT)
    init = [{s: torch.randn(b, n, dtype=DT) for s in layer.spec.states}]
    _assert_close(*_online_vs_bptt(model, [layer], x, w, init), exact_outputs=not linear)


@pytest.mark.parametrize(
    "name, kw",
    [
        ("LIB", {"spike_fn": "smooth"}),
        ("SLIB", {"spike_fn": "atan", "detach_reset": True}),
        ("LIB", {"beta_rank": 0, "threshold_rank": 0}),  # scalar parameters
        ("SRLIT", {"learn_beta": False, "learn_pos_threshold": False, "gamma_rank": 0}),  # fixed and mixed
        (
            "DSLI",
            {"learn_pos_alpha": False, "learn_neg_alpha": False, "learn_pos_beta": False, "learn_neg_beta": False},
        ),
        ("DSRLITS", {"spike_fn": "fast_sigmoid"}),
    ],
)
def test_online_gradients_equal_bptt_variants(name, kw):
    n, m, b, t = 3, 5, 3, 9
    layer = _layer(name, n, **kw)
    model = tt.Model(nn.Linear(m, n).to(DT), layer)
    x = torch.randn(t, b, m, dtype=DT) * 1.5
    w = torch.randn(t, b, n, dtype=DT)
    init = [{s: torch.randn(b, n, dtype=DT) for s in layer.spec.states}]
    _assert_close(*_online_vs_bptt(model, [layer], x, w, init), exact_outputs=False)


def test_channel_layout_and_rank0():
    """A [B, C, H, W] input with dim=-3 (no linear): per-channel parameters broadcast over space."""
    layer = _layer("SLIT", 3, dim=-3, alpha_rank=0)
    model = tt.Model(layer)
    x = torch.randn(6, 2, 3, 2, 2, dtype=DT) * 1.5
    w = torch.randn(6, 2, 3, 2, 2, dtype=DT)
    init = [{s: torch.randn(2, 3, 2, 2, dtype=DT) for s in layer.spec.states}]
    _assert_close(*_online_vs_bptt(model, [layer], x, w, init))


def test_float32_within_float_tolerance():
    layer = _layer("SRLIB", 8, dtype=torch.float32)
    model = tt.Model(nn.Linear(5, 8), layer)
    x = torch.randn(20, 4, 5) * 1.5
    w = torch.randn(20, 4, 8)
    init = [{s: torch.randn(4, 8) for s in layer.spec.states}]
    _assert_close(*_online_vs_bptt(model, [layer], x, w, init), rtol=1e-4, atol=1e-5, exact_outputs=False)


def test_stateless_modules_above_keep_gradients_exact():
    """One traced unit below stateless modules only: every gradient is exact."""
    layer = _layer("LIB", 6)
    model = tt.Model(nn.Linear(4, 6).to(DT), layer, nn.Linear(6, 3).to(DT), nn.Tanh())
    x = torch.randn(8, 2, 4, dtype=DT) * 2
    w = torch.randn(8, 2, 3, dtype=DT)
    init = [{"mem": torch.randn(2, 6, dtype=DT)}]
    _assert_close(*_online_vs_bptt(model, [layer], x, w, init), exact_outputs=False)


def test_deep_chain_top_layer_exact_lower_layers_approximate():
    """Across layers only this step's gradient passes down: the top unit is exact, the lower one is not."""
    l1, l2 = _layer("LIB", 5, spike_fn="smooth"), _layer("LI", 3)
    model = tt.Model(nn.Linear(4, 5).to(DT), l1, nn.Linear(5, 3).to(DT), l2)
    x = torch.randn(8, 2, 4, dtype=DT)
    w = torch.randn(8, 2, 3, dtype=DT)
    init = [{"mem": torch.randn(2, 5, dtype=DT)}, {"mem": torch.randn(2, 3, dtype=DT)}]
    (y, ref), (ys, got) = _online_vs_bptt(model, [l1, l2], x, w, init)
    torch.testing.assert_close(ys, y, rtol=1e-10, atol=1e-12)  # to rounding: two nn.Linear (see _assert_close)
    top = ("2.weight", "2.bias", "3.raw_beta")
    for k in top:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=1e-12)
    for k in ("0.weight", "1.raw_beta", "1.raw_threshold"):
        assert torch.isfinite(got[k]).all() and got[k].abs().sum() > 0
        assert not torch.allclose(got[k], ref[k])


def test_update_every_schedule_and_equivalence_to_summed_gradients():
    torch.manual_seed(1)
    model = tt.Model(nn.Linear(3, 4), snn.SLIB(4), nn.Linear(4, 2))
    twin = tt.Model(nn.Linear(3, 4), snn.SLIB(4), nn.Linear(4, 2))
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = tt.online.OnlineLearner(model, opt, nn.functional.mse_loss, update_every=3)
    watch = tt.online.OnlineLearner(twin, None, nn.functional.mse_loss)
    before = model[0].weight.detach().clone()
    for t in range(6):
        x, target = torch.randn(2, 3), torch.randn(2, 2)
        learner.step(x, target)
        watch.step(x, target)
        changed = not torch.equal(model[0].weight, before)
        assert changed == (t >= 2) and learner.num_steps == t + 1
        if t == 2:  # the first update used the gradients of steps 0-2, summed
            with torch.no_grad():
                for p, q in zip(model.parameters(), twin.parameters(), strict=True):
                    torch.testing.assert_close(p, q - 0.1 * q.grad)
                    assert p.grad is None
    assert learner.last_loss is not None and learner.last_loss.ndim == 0


def test_custom_loss_through_forward():
    """``learner(x)`` then any loss's ``backward()`` gives the same gradients as ``learner.step``."""
    model = tt.Model(nn.Linear(3, 4), snn.LIB(4))
    learner = tt.online.OnlineLearner(model)
    xs = torch.randn(5, 2, 3)
    for x in xs:
        learner(x).pow(2).sum().backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    learner.zero_states()
    for x in xs:
        learner.step(x, loss_fn=lambda y: y.pow(2).sum())
    for a, p in zip(g1, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


def test_traces_are_hidden_states_with_constant_memory():
    model = tt.Model(nn.Linear(3, 4), snn.SLIB(4), nn.Linear(4, 2), snn.LI(2))
    learner = tt.online.OnlineLearner(model, loss_fn=nn.functional.mse_loss)
    keys = tt.get_states(learner)
    assert "units.0.mem__beta" in keys and "units.0.syn__linear_weight" in keys and "model.1.mem" in keys
    assert "units.1.mem__linear_bias" in keys and all(v is None for v in keys.values())

    def shapes(steps):
        tt.zero_states(learner)
        for _ in range(steps):
            learner.step(torch.randn(2, 3), torch.randn(2, 2))
        return {k: tuple(v.shape) for k, v in tt.get_states(learner).items()}

    short, long = shapes(3), shapes(40)
    assert short == long
    assert long["units.0.syn__linear_weight"] == (2, 4, 3)
    learner.zero_states()
    assert all(v is None for v in tt.get_states(learner).values())


def test_zeroing_only_the_model_restarts_the_traces():
    model = tt.Model(nn.Linear(3, 4), snn.LIB(4))
    learner = tt.online.OnlineLearner(model, loss_fn=lambda y: y.sum())
    xs = torch.randn(4, 2, 3)
    for x in xs:
        learner.step(x)
    model.zero_grad(set_to_none=True)
    model.zero_states()  # the model starts a new stream; its traces must not carry the old one
    for x in xs:
        learner.step(x)
    g_after = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    fresh = tt.online.OnlineLearner(model, loss_fn=lambda y: y.sum())
    model.zero_states()
    for x in xs:
        fresh.step(x)
    for a, p in zip(g_after, model.parameters(), strict=True):
        assert torch.equal(p.grad, a)


def _make(seed=3):
    torch.manual_seed(seed)
    model = tt.Model(nn.Linear(3, 6), snn.DSRLIT(6), nn.Linear(6, 2), snn.SLI(2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt, tt.online.OnlineLearner(model, opt, nn.functional.mse_loss, update_every=3)


def test_stop_and_resume_bit_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, 3, generator=g), torch.randn(2, 2, generator=g)) for _ in range(11)]
    model, opt, learner = _make()
    for x, tgt in data[:5]:  # stop mid-window: two steps of gradients are pending
        learner.step(x, tgt)
    learner.save_states(tmp_path / "stream.safetensors")
    torch.save({"learner": learner.state_dict(), "opt": opt.state_dict()}, tmp_path / "train.pt")
    ys = [learner.step(x, tgt) for x, tgt in data[5:]]
    final = [p.detach().clone() for p in model.parameters()]

    model2, opt2, learner2 = _make(seed=99)  # different initial weights: everything must come from the files
    ckpt = torch.load(tmp_path / "train.pt", weights_only=False)
    learner2.load_state_dict(ckpt["learner"])
    opt2.load_state_dict(ckpt["opt"])
    learner2.load_states(tmp_path / "stream.safetensors")
    assert learner2.num_steps == 5
    ys2 = [learner2.step(x, tgt) for x, tgt in data[5:]]
    for a, b in zip(ys, ys2, strict=True):
        assert torch.equal(a, b)
    for a, p in zip(final, model2.parameters(), strict=True):
        assert torch.equal(a, p)


def test_learns_a_teacher_online():
    """A Linear + LI student tracks a fixed teacher of the same form, trained one step at a time."""
    torch.manual_seed(0)
    teacher = tt.Model(nn.Linear(3, 2), snn.LI(2, 0.8))
    student = tt.Model(nn.Linear(3, 2), snn.LI(2, 0.3))
    opt = torch.optim.Adam(student.parameters(), lr=3e-2)
    learner = tt.online.OnlineLearner(student, opt, nn.functional.mse_loss, update_every=2)
    losses = []
    with torch.no_grad():
        targets = teacher.scan(xs := torch.randn(400, 4, 3))
    for x, tgt in zip(xs, targets, strict=True):
        learner.step(x, tgt)
        losses.append(learner.last_loss.item())
    assert sum(losses[-50:]) < 0.2 * sum(losses[:50])


def test_unsupported_layers_raise_naming_what_is_supported():
    for model in (
        tt.Model(nn.Linear(3, 4), tt.rnn.LSTM(4, 4)),
        tt.Model(tt.ssm.S4D(4)),
        nn.Sequential(snn.LIB(4), tt.rnn.GRU(4, 4)),
    ):
        with pytest.raises(tt.online.UnsupportedLayerError, match="Supported: the 32 spiking layers") as e:
            tt.online.OnlineLearner(model)
        assert "DSRLITS" in str(e.value)

    class Custom(tt.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = snn.LIB(4), snn.LI(4)

        def forward(self, x):
            return self.b(self.a(x) + x)

    with pytest.raises(tt.online.UnsupportedLayerError, match="custom forward"):
        tt.online.OnlineLearner(Custom())
    with pytest.raises(ValueError, match="update_every"):
        tt.online.OnlineLearner(snn.LIB(4), update_every=0)
    with pytest.raises(ValueError, match="needs a loss"):
        tt.online.OnlineLearner(snn.LIB(4)).step(torch.randn(2, 4))
