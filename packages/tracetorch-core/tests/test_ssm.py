"""State-space layers: the fast selective scan == its reference (outputs, final state, every gradient);
S4D / S6 / Mamba scan == step loop (layouts, initial states, chunking, truncated BPTT); state files; a mixed
spiking + LSTM + Mamba model that trains and resumes a stream bit-exactly."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import assert_same_run, run
from torch import nn

import tracetorch as tt
from tracetorch import rnn, snn, ssm
from tracetorch.ops.selective_scan import selective_scan, selective_scan_ref

DT = torch.float64


def scan_inputs(t, b, d, n, *, skip=True, init=True, dtype=DT):
    g = torch.Generator().manual_seed(t * 1000 + b * 100 + d * 10 + n)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    u = r(t, b, d)
    delta = torch.rand(t, b, d, generator=g, dtype=dtype) * 0.5 + 0.01
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 3 - 0.1
    ins = [u, delta, A, r(t, b, n), r(t, b, n), r(d) if skip else None, r(b, d, n) if init else None]
    return [None if v is None else v.requires_grad_(True) for v in ins]


@pytest.mark.parametrize(
    "t,b,d,n,chunk",
    [(1, 1, 1, 1, 16), (7, 3, 5, 4, 3), (16, 2, 3, 2, 16), (33, 2, 4, 3, 8), (40, 3, 6, 5, 64), (9, 1, 2, 3, 1)],
)
@pytest.mark.parametrize("variant", ["full", "no-skip", "no-init"])
def test_selective_scan_matches_reference(t, b, d, n, chunk, variant):
    ins = scan_inputs(t, b, d, n, skip=variant != "no-skip", init=variant != "no-init")
    y_fast, h_fast = selective_scan(*ins, chunk=chunk)
    y_ref, h_ref = selective_scan_ref(*ins)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-12, atol=1e-12)
    wy, wh = torch.randn_like(y_ref), torch.randn_like(h_ref)
    names = [k for k, v in zip(["u", "delta", "A", "B", "C", "D", "h0"], ins, strict=True) if v is not None]
    leaves = [v for v in ins if v is not None]
    g_fast = torch.autograd.grad((y_fast * wy).sum() + (h_fast * wh).sum(), leaves)
    g_ref = torch.autograd.grad((y_ref * wy).sum() + (h_ref * wh).sum(), leaves)
    for name, gf, gr in zip(names, g_fast, g_ref, strict=True):
        assert gr.abs().sum() > 0 or (variant == "no-init" and t == 1 and name == "A")
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"grad {name}: {m}")


def test_selective_scan_gradcheck_and_checks():
    ins = scan_inputs(5, 2, 3, 2)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=2), ins)
    with pytest.raises(ValueError, match="delta must have shape"):
        selective_scan(ins[0], ins[1][:, :1], *ins[2:])
    with pytest.raises(ValueError, match="chunk"):
        selective_scan(*ins, chunk=0)
    with torch.no_grad():  # no autograd: same numbers
        y, h = selective_scan(*ins)
    y_ref, h_ref = selective_scan_ref(*ins)
    torch.testing.assert_close(y, y_ref.detach())
    torch.testing.assert_close(h, h_ref.detach())


def test_selective_scan_float32_tracks_float64():
    ins = scan_inputs(300, 2, 8, 4)
    y64 = selective_scan(*ins)[0]
    y32 = selective_scan(*[v.detach().float() for v in ins])[0]
    torch.testing.assert_close(y32.double(), y64.detach(), rtol=1e-4, atol=1e-4)


LAYERS = {
    "s4d": (lambda f, **kw: ssm.S4D(f, 4, **kw), ("h",)),
    "s6": (lambda f, **kw: ssm.S6(f, 3, **kw), ("h",)),
    "mamba": (lambda f, **kw: ssm.Mamba(f, 3, d_conv=3, expand=2, **kw), ("conv", "ssm")),
}


def initial_states(layer, step_shape):
    probe = copy.deepcopy(layer)
    probe(torch.zeros(step_shape, dtype=DT))
    return {k: torch.randn_like(v) * 0.5 for k, v in probe.get_states().items()}


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("layout", ["dense", "conv", "unbatched"])
def test_scan_equals_step_loop(kind, layout):
    make, names = LAYERS[kind]
    layer = make(4, dim=-3 if layout == "conv" else -1).double()
    step_shape = {"dense": (3, 4), "conv": (2, 4, 3, 2), "unbatched": (4,)}[layout]
    x = torch.randn(13, *step_shape, dtype=DT)
    for initial in (None, initial_states(layer, step_shape)):
        a = run(layer, x, initial, "scan")
        b = run(layer, x, initial, "steps")
        assert a[0].shape == x.shape
        assert set(a[1]) == set(names)
        assert_same_run(a, b, exact_outputs=False, rtol=1e-10, atol=1e-12)
        if initial is not None:
            assert {k for k in a[2] if k.startswith("init:")} == {f"init:{k}" for k in names}


def test_state_shapes_have_a_trailing_axis():
    x = torch.randn(2, 6, 3, 5)
    assert ssm.S4D(6, 8, dim=-3).scan(x[None]).shape == (1, 2, 6, 3, 5)
    m = ssm.Mamba(6, d_state=7, d_conv=4, expand=2, dim=-3)
    m(x)
    assert m.conv.shape == (2, 12, 3, 5, 3) and m.ssm.shape == (2, 12, 3, 5, 7)
    s = ssm.S6(6, 5)
    s(torch.randn(6))
    assert s.h.shape == (6, 5)


@pytest.mark.parametrize("kind", ["s4d", "s6", "mamba"])
def test_long_scan_matches_steps(kind):
    # S4D's scan is the FFT convolution form; S6/Mamba cross several chunks of the selective scan
    make, _ = LAYERS[kind]
    layer = make(3).double()
    x = torch.randn(150, 2, 3, dtype=DT)
    assert_same_run(run(layer, x, None, "scan"), run(layer, x, None, "steps"), exact_outputs=False, rtol=1e-9,
                    atol=1e-11)  # fmt: skip


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_input_reaches_no_earlier_output(kind, bad):
    """A NaN (or inf) at step t leaves the outputs before t as they were, in scan as in the steps (S4D's FFT
    scan once spread it to every step), and the scan still equals the steps, non-finite values included."""
    make, _ = LAYERS[kind]
    layer = make(3).double()
    x = torch.randn(12, 2, 3, dtype=DT)
    clean = run(layer, x, None, "scan")[0]
    x[7, 1, 2] = bad
    for mode in ("scan", "steps"):
        m = copy.deepcopy(layer)
        y = m.scan(x) if mode == "scan" else torch.stack([m(xt) for xt in x])
        torch.testing.assert_close(y[:7], clean[:7], rtol=1e-10, atol=1e-12, msg=lambda m, mode=mode: f"{mode}: {m}")
        assert not torch.isfinite(y[7:]).all()
    initial = initial_states(layer, (2, 3))
    (ya, fa, _), (yb, fb, _) = run(layer, x, initial, "scan"), run(layer, x, initial, "steps")
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12, equal_nan=True)
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("kind", LAYERS)
def test_float32_scan_tracks_float64_steps(kind):
    make, _ = LAYERS[kind]
    layer = make(6)
    x = torch.randn(400, 2, 6)
    with torch.no_grad():
        y32 = layer.scan(x).double()
        ref = copy.deepcopy(layer).double()
        ref.zero_states()
        y64 = torch.stack([ref(xt) for xt in x.double().unbind(0)])
    assert (y32 - y64).abs().max() <= 1e-5 * y64.abs().max()


@pytest.mark.parametrize("kind", LAYERS)
def test_chunked_scan_and_truncated_bptt(kind):
    make, _ = LAYERS[kind]
    layer = make(4).double()
    x = torch.randn(20, 2, 4, dtype=DT)
    whole = layer.scan(x)
    final = {k: v.detach() for k, v in layer.get_states().items()}
    layer.zero_states()
    parts = torch.cat([layer.scan(x[:7]), layer.scan(x[7:8]), layer.scan(x[8:])])
    torch.testing.assert_close(parts, whole, rtol=1e-10, atol=1e-12)
    for k, v in layer.get_states().items():
        torch.testing.assert_close(v, final[k], rtol=1e-10, atol=1e-12)
    # truncated BPTT: no gradient crosses detach_states
    layer.zero_states()
    xg = x.clone().requires_grad_(True)
    layer.scan(xg[:10])
    layer.detach_states()
    layer.scan(xg[10:]).sum().backward()
    assert xg.grad[:10].abs().sum() == 0 and xg.grad[10:].abs().sum() > 0


@pytest.mark.parametrize("kind", LAYERS)
def test_save_load_continue_is_bit_identical(kind, tmp_path):
    make, _ = LAYERS[kind]
    layer = make(4)
    x = torch.randn(30, 3, 4)
    with torch.no_grad():
        full = torch.stack([layer(xt) for xt in x.unbind(0)])
        layer.zero_states()
        first = torch.stack([layer(xt) for xt in x[:12].unbind(0)])
        layer.save_states(tmp_path / "s.safetensors")
        fresh = copy.deepcopy(layer)
        fresh.zero_states()
        fresh.load_states(tmp_path / "s.safetensors")
        second = torch.stack([fresh(xt) for xt in x[12:].unbind(0)])
        assert torch.equal(torch.cat([first, second]), full)
        # the same through scan
        layer.zero_states()
        a = layer.scan(x[:12])
        layer.save_states(tmp_path / "t.safetensors")
        b = layer.scan(x[12:])
        fresh.zero_states()
        fresh.load_states(tmp_path / "t.safetensors")
        assert torch.equal(fresh.scan(x[12:]), b) and a.shape == (12, 3, 4)


@pytest.mark.parametrize("kind", LAYERS)
def test_batch_change_and_wrong_state_files_are_errors(kind, tmp_path):
    make, _ = LAYERS[kind]
    layer = make(4)
    layer(torch.randn(3, 4))
    with pytest.raises(tt.StateError):
        layer(torch.randn(5, 4))
    with pytest.raises(tt.StateError):
        layer.scan(torch.randn(2, 5, 4))
    layer.save_states(tmp_path / "s.safetensors")
    other = {"s4d": lambda: ssm.S4D(4, 5), "s6": lambda: ssm.S6(4, 4), "mamba": lambda: ssm.Mamba(4, 4, d_conv=3)}
    with pytest.raises(tt.StateLoadError, match="d_state"):
        other[kind]().load_states(tmp_path / "s.safetensors")
    if kind == "mamba":
        with pytest.raises(tt.StateLoadError, match="d_conv"):
            ssm.Mamba(4, 3, d_conv=4).load_states(tmp_path / "s.safetensors")
        with pytest.raises(tt.StateLoadError, match="channels"):
            ssm.Mamba(4, 3, d_conv=3, expand=1).load_states(tmp_path / "s.safetensors")
    fresh = make(4)
    fresh.load_states(tmp_path / "s.safetensors")  # the right shapes load


def test_inits_follow_the_references():
    torch.manual_seed(0)
    m = ssm.Mamba(64, d_state=16, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {  # mamba_ssm's Mamba(d_model=64): same keys and shapes
        "A_log": (128, 16), "D": (128,), "in_proj.weight": (256, 64), "conv1d.weight": (128, 1, 4),
        "conv1d.bias": (128,), "x_proj.weight": (4 + 32, 128), "dt_proj.weight": (128, 4), "dt_proj.bias": (128,),
        "out_proj.weight": (64, 128),
    }  # fmt: skip
    dt = nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    assert torch.allclose(-torch.exp(m.A_log[3]), -torch.arange(1, 17.0))
    assert ssm.S6(33).dt_rank == 3 and ssm.Mamba(33, expand=1).dt_rank == 3 and ssm.S6(8, dt_rank=2).dt_rank == 2
    s4 = ssm.S4D(32, 8, dt_min=0.01, dt_max=0.02)
    assert torch.exp(s4.log_dt).min() >= 0.01 * 0.999 and torch.exp(s4.log_dt).max() <= 0.02 * 1.001
    assert s4.C.std().item() == pytest.approx(1 / math.sqrt(8), rel=0.2)
    for bad in (lambda: ssm.S6(4, 0), lambda: ssm.Mamba(4, d_conv=1), lambda: ssm.S4D(4, dt_min=0.2, dt_max=0.1)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize("kind", LAYERS)
def test_derived_parameters_follow_parameter_updates(kind):
    # under no_grad the discretisation is cached; an in-place update (an optimiser step) must invalidate it
    make, _ = LAYERS[kind]
    layer = make(4)
    x = torch.randn(3, 4)
    with torch.no_grad():
        layer(x)
        before = layer.save_states()
        y0 = layer(x)
        for p in layer.parameters():
            p.mul_(1.1)
        layer.load_states(before)
        y1 = layer(x)
    layer.load_states(before)
    y2 = layer(x)  # grad mode: derived afresh
    assert not torch.equal(y0, y1) and torch.equal(y1, y2.detach())
    layer.load_states(before)
    torch.autograd.grad(layer(x).sum(), list(layer.parameters()))  # every parameter gets a gradient


def mamba_pair(features, dtype=DT, d_conv=3, **kw):
    """Two identical Mambas: one streams through the no-grad fast path, the other through ``Layer.forward``."""
    torch.manual_seed(0)
    layer = ssm.Mamba(features, 3, d_conv=d_conv, expand=2, **kw).to(dtype)
    return layer, copy.deepcopy(layer)


def assert_same_states(a, b):
    sa, sb = a.get_states(), b.get_states()
    assert set(sa) == set(sb) == {"conv", "ssm"}
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "batch,dim,dtype,d_conv",
    [(1, -1, DT, 3), (3, -1, DT, 3), (2, 1, DT, 2), (1, -1, torch.float32, 3), (2, -1, DT, 40), (1, -1, DT, 40)],
)
def test_mamba_streaming_fast_path_equals_reference_step(batch, dim, dtype, d_conv):
    # the no-grad streaming path (ssm.streaming.MambaStream, out= ops on preallocated buffers) beside the reference step
    # (Layer.forward -> Mamba._flat_step): bit-identical outputs and states from a non-zero initial state, over more
    # steps than one pass of its window buffer; and the same numbers as scan
    fast, ref = mamba_pair(4, dtype, dim=dim, d_conv=d_conv)
    x = torch.randn(100, batch, 4, dtype=dtype)
    init = {"conv": torch.randn(batch, 8, d_conv - 1, dtype=dtype), "ssm": torch.randn(batch, 8, 3, dtype=dtype)}
    fast.load_states(init)
    ref.load_states(init)
    with torch.no_grad():
        a = torch.stack([fast(xt) for xt in x])
        b = torch.stack([tt.Layer.forward(ref, xt) for xt in x])
        assert fast.__dict__.get("_stream") is not None and ref.__dict__.get("_stream") is None
    assert torch.equal(a, b)
    assert_same_states(fast, ref)
    ref.load_states(init)
    with torch.no_grad():
        ys = ref.scan(x)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == DT else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(a, ys, **tol)
    for k, v in ref.get_states().items():
        torch.testing.assert_close(fast.get_states()[k], v, **tol)


def test_mamba_streaming_follows_state_and_parameter_changes(tmp_path):
    # loads, zero/detach, states set by hand, scans, inference mode, in-place and .data parameter updates between
    # fast steps: the fast path picks every change up and stays bit-identical to the reference
    fast, ref = mamba_pair(4)
    x = torch.randn(70, 2, 4, dtype=DT)
    outs = []
    for t, xt in enumerate(x):
        for layer in (fast, ref):
            if t == 12:
                layer.load_states(tmp_path / "s.safetensors")
            elif t == 20:
                layer.zero_states()
            elif t == 25:
                layer.detach_states()
            elif t == 35:
                layer.ssm = layer.ssm * 0.5  # one state set by hand
            elif t == 37:
                layer.conv = layer.conv.flip(-1)
            elif t == 40:
                with torch.no_grad():
                    for p in layer.parameters():
                        p.mul_(1.01)
            elif t == 45:
                layer.in_proj.weight.data = layer.in_proj.weight.data * 0.9
            elif t == 50:
                layer.load_states({k: v * 0.5 for k, v in layer.save_states().items()})
        if t == 30:  # a scan in the middle of a stream continues from, and leaves, the states
            with torch.no_grad():
                outs.append((fast.scan(x[30:33]), ref.scan(x[30:33])))
        if 30 <= t < 33:
            continue
        with torch.inference_mode() if 55 <= t < 58 else torch.no_grad():
            outs.append((fast(xt), tt.Layer.forward(ref, xt)))
        if t == 8:
            fast.save_states(tmp_path / "s.safetensors")
    for a, b in outs:
        assert torch.equal(a, b)
    assert_same_states(fast, ref)
    with torch.no_grad():  # a state kept from get_states() is a live reference; save_states() copies
        kept = fast.save_states()
        y = fast(x[0])
        fast.load_states(kept)
        assert torch.equal(fast(x[0]), y)


def test_mamba_streaming_falls_back_and_checks_inputs():
    fast, ref = mamba_pair(4)
    calls = []
    fast.in_proj.register_forward_hook(lambda *a: calls.append(1))  # a hooked submodule: the reference runs
    x = torch.randn(5, 2, 4, dtype=DT)
    with torch.no_grad():
        a = torch.stack([fast(xt) for xt in x])
        b = torch.stack([tt.Layer.forward(ref, xt) for xt in x])
    assert len(calls) == 5 and torch.equal(a, b)
    layer = ssm.Mamba(4, 3)
    with torch.no_grad():
        layer(torch.randn(3, 4))
        with pytest.raises(tt.StateError):
            layer(torch.randn(5, 4))
        with pytest.raises(tt.StateError, match="expects 4 features"):  # mid-stream: a StateError
            layer(torch.randn(3, 6))
        with pytest.raises(tt.StateError, match="dtype changed mid-stream"):
            layer(torch.randn(3, 4, dtype=DT))
        layer.zero_states()
        with pytest.raises(RuntimeError, match="dtype"):  # not the parameters' dtype: the reference's error
            layer(torch.randn(3, 4, dtype=DT))


def test_s6_is_mambas_selective_scan_with_delta_times_b():
    # one step by hand: h = exp(delta A) h0 + delta u B (no extra delta factor), y = C.h + D u
    layer = ssm.S6(3, 2).double()
    x = torch.randn(1, 3, dtype=DT)
    h0 = torch.randn(1, 3, 2, dtype=DT)
    layer.load_states({"h": h0})
    y = layer(x)
    dt_in, B, C = layer.x_proj(x).split([layer.dt_rank, 2, 2], -1)
    delta = nn.functional.softplus(layer.dt_proj(dt_in))
    A = -torch.exp(layer.A_log)
    h = torch.exp(delta[..., None] * A) * h0 + (delta * x)[..., None] * B[:, None, :]
    torch.testing.assert_close(layer.h, h)
    torch.testing.assert_close(y, (h * C[:, None, :]).sum(-1) + layer.D * x)


def test_mixed_model_trains_and_resumes_bit_exactly(tmp_path):
    torch.manual_seed(0)
    model = tt.Model(nn.Linear(3, 16), snn.LIB(16), rnn.LSTM(16, 16), ssm.Mamba(16, 4, expand=2), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(24, 4, 3)
    target = torch.cumsum(x[..., :2], 0) / 5  # needs memory
    losses = []
    for _ in range(8):
        model.zero_states()
        loss = nn.functional.mse_loss(model.scan(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert set(model.get_states()) == {"1.mem", "2.h", "2.c", "3.conv", "3.ssm"}
    with torch.no_grad():
        model.zero_states()
        full = torch.stack([model(xt) for xt in x.unbind(0)])
        model.zero_states()
        first = torch.stack([model(xt) for xt in x[:10].unbind(0)])
        model.save_states(tmp_path / "stream.safetensors")
        resumed = copy.deepcopy(model)
        resumed.zero_states()
        resumed.load_states(tmp_path / "stream.safetensors")
        second = torch.stack([resumed(xt) for xt in x[10:].unbind(0)])
    assert torch.equal(torch.cat([first, second]), full)


@pytest.mark.parametrize("kind", LAYERS)
def test_step_compiles_fullgraph(kind):
    torch._dynamo.reset()
    make, _ = LAYERS[kind]
    eager = make(4)
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(compiled_layer, fullgraph=True, backend="aot_eager")
    xs = torch.randn(4, 2, 4)
    with torch.no_grad():
        a = torch.stack([compiled(x) for x in xs])
        b = torch.stack([eager(x) for x in xs])
    torch.testing.assert_close(a, b)
    for k, v in eager.get_states().items():
        torch.testing.assert_close(compiled_layer.get_states()[k], v)
    torch._dynamo.reset()
