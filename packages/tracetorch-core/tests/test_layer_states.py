"""Hidden-state lifecycle of a single layer: lazy creation, zero, detach, layout (dim=), dtype/device, errors."""

from __future__ import annotations

import contextlib
import copy
import random

import pytest
import torch
from conftest import LAYER_KINDS, LAYOUTS, random_layer
from torch import nn

import tracetorch as tt
from tracetorch import snn

DT = torch.float64


def test_states_created_lazily_from_first_input():
    layer = snn.LIB(8)
    assert layer.mem is None and layer.state_names == ("mem",)
    x = torch.randn(3, 8, dtype=torch.float64)
    layer(x)
    assert layer.mem.shape == (3, 8) and layer.mem.dtype == torch.float64


def test_zero_states_sets_none_and_allows_new_batch_size():
    layer = snn.LIB(8)
    layer(torch.randn(3, 8))
    layer.zero_states()
    assert layer.mem is None
    layer(torch.randn(5, 8))
    assert layer.mem.shape == (5, 8)


def test_detach_states_keeps_values_and_cuts_graph():
    layer = snn.LI(4)
    x = torch.randn(2, 4, requires_grad=True)
    layer(x)
    before = layer.mem
    assert before.grad_fn is not None
    layer.detach_states()
    assert layer.mem.grad_fn is None and torch.equal(layer.mem, before)
    layer(torch.randn(2, 4)).sum().backward()
    assert x.grad is None  # nothing flowed back past the detach


def test_batch_size_change_mid_stream_is_an_error_not_a_reinit():
    layer = snn.LIB(8)
    layer(torch.randn(3, 8))
    mem = layer.mem.clone()
    with pytest.raises(tt.StateError, match="changed mid-stream; call zero_states"):
        layer(torch.randn(4, 8))
    assert torch.equal(layer.mem, mem)  # nothing was lost


def test_feature_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="expects 8 features along dim -1"):
        snn.LIB(8)(torch.randn(3, 7))


@pytest.mark.parametrize("dim, shape", [(-3, (2, 5)), (2, (2, 5)), (-1, ())])
def test_dim_that_does_not_exist_is_an_error(dim, shape):
    layer = snn.LI(5, dim=dim)
    with pytest.raises(ValueError, match="does not exist"):
        layer(torch.randn(shape))


def test_conv_layout_dim_minus_3_matches_channels_last():
    c = 4
    beta = torch.rand(c) * 0.8 + 0.1
    thr = torch.rand(c) + 0.5
    conv = snn.LIB(c, beta=beta, threshold=thr, dim=-3)
    last = snn.LIB(c, beta=beta, threshold=thr, dim=-1)
    x = torch.randn(6, 2, c, 5, 5) * 2
    y_conv = conv.scan(x)
    y_last = last.scan(x.movedim(2, -1)).movedim(-1, 2)
    assert torch.equal(y_conv, y_last)
    assert conv.mem.shape == (2, c, 5, 5)


def test_positive_dim_counts_within_the_step_input():
    layer = snn.LI(3, beta=torch.tensor([0.1, 0.5, 0.9]), dim=1)
    x = torch.randn(4, 2, 3, 6)  # [T, B, C, L], features on axis 1 of the step input [B, C, L]
    ref = snn.LI(3, beta=torch.tensor([0.1, 0.5, 0.9]), dim=-2)
    assert torch.equal(layer.scan(x), ref.scan(x))
    stepped = torch.stack([snn.LI(3, beta=torch.tensor([0.1, 0.5, 0.9]), dim=1)(xt) for xt in x.unbind(0)][:1])
    assert torch.equal(stepped[0], x[0])  # first step from a zero state is the input itself
    layer.zero_states()
    ref.zero_states()
    assert torch.equal(torch.stack([layer(xt) for xt in x.unbind(0)]), ref.scan(x))


def test_states_follow_to_and_stay_out_of_state_dict():
    layer = snn.LIB(4)
    layer(torch.randn(2, 4))
    assert set(layer.state_dict()) == {"raw_beta", "raw_threshold", "raw_bias"}
    layer.double()
    assert layer.mem.dtype == torch.float64 and layer.raw("beta").dtype == torch.float64
    layer.to(torch.float32)
    assert layer.mem.dtype == torch.float32
    layer(torch.randn(2, 4))  # continues without error in the new dtype


def test_state_attribute_assignment():
    layer = snn.LI(4)
    layer.mem = torch.ones(2, 4)
    assert torch.equal(layer(torch.zeros(2, 4)), torch.full((2, 4), 0.9))
    with pytest.raises(TypeError, match="tensor or None"):
        layer.mem = 3.0


def test_lib_fires_and_resets_subtractively():
    layer = snn.LIB(1, beta=0.5, threshold=1.0)
    outs, mems = [], []
    for v in [0.6, 0.6, 0.6, 2.5]:
        outs.append(layer(torch.tensor([[v]])).item())
        mems.append(layer.mem.item())
    # 0.6 -> 0.9 -> 1.05 fires (1.05 - 1 = 0.05) -> 0.025 + 2.5 = 2.525 fires -> 1.525
    assert outs == [0.0, 0.0, 1.0, 1.0]
    assert mems == pytest.approx([0.6, 0.9, 0.05, 1.525], abs=1e-6)


def test_scan_rejects_bad_sequences():
    layer = snn.LI(4)
    with pytest.raises(ValueError, match="time first"):
        layer.scan(torch.randn(4))
    with pytest.raises(ValueError, match="empty sequence"):
        layer.scan(torch.randn(0, 2, 4))


def test_autocast_keeps_recurrences_and_states_in_float32():
    """Under bfloat16 autocast (CPU here; CUDA in test_cuda.py) every stateful layer keeps its recurrence and
    hidden states in float32 while matrix products autocast; the stream then continues without autocast, and
    the outputs stay close to the float32 run's."""
    from tracetorch import rnn, ssm

    torch.manual_seed(0)
    # each stateful layer right after a Linear, so that it is fed bfloat16
    model = tt.Model(nn.Linear(6, 8), rnn.GRU(8, 8), nn.Linear(8, 8), ssm.Mamba(8, 4, d_conv=3, expand=2),
                     nn.Linear(8, 8), snn.LIEMA(8), nn.Linear(8, 3))  # fmt: skip
    x = torch.randn(16, 2, 6)
    with torch.no_grad():
        ref = model.scan(x)
        model.zero_states()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model.scan(x[:8])
            y_step = torch.stack([model(xt) for xt in x[8:12]])
        assert y.dtype == torch.bfloat16  # the last Linear autocasts
        assert all(v.dtype == torch.float32 for v in model.get_states().values())
        y_rest = model.scan(x[12:])  # no autocast: float32 states meet float32 weights
    got = torch.cat([y.float(), y_step.float(), y_rest])
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()


def _values(layer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in layer.get_states().items()}


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_outputs_never_share_memory_with_hidden_states(kind):
    """Changing a returned output in place (``y.add_(1)``) leaves the stream as it was, for every layer type,
    in step mode (with and without autograd) and in scan mode (LI's scan once returned its final state as a
    view of the output; LI, LIEMA, LSTM, GRU and SimpleRNN steps returned the state tensor itself)."""
    rng = random.Random(kind)
    for layout in ("dense", "conv", "unbatched"):
        dim, shape_of = LAYOUTS[layout]
        layer = random_layer(kind, 3, rng, dim=dim)
        x = torch.randn(6, *shape_of(3), generator=torch.Generator().manual_seed(rng.randrange(1000)), dtype=DT)
        for mode in ("step", "no_grad step", "scan", "no_grad scan"):
            mutated, clean = copy.deepcopy(layer), copy.deepcopy(layer)
            grad = contextlib.nullcontext() if mode in ("step", "scan") else torch.no_grad()
            for m, change in ((mutated, True), (clean, False)):
                with grad:
                    outs = [m.scan(x[:4])] if "scan" in mode else [m(xt) for xt in x[:4]]
                if change:
                    with torch.no_grad():
                        for y in outs:
                            y.add_(1.0)
            assert _values(mutated).keys() == _values(clean).keys()
            for k, v in _values(clean).items():
                assert torch.equal(_values(mutated)[k], v), f"{kind} {layout} {mode}: state {k} changed"
            with grad:
                go_on = [
                    m.scan(x[4:]) if "scan" in mode else torch.stack([m(xt) for xt in x[4:]]) for m in (mutated, clean)
                ]
            assert torch.equal(go_on[0], go_on[1]), f"{kind} {layout} {mode}: the continuation changed"


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_training_after_inference_mode(kind):
    """A stream run under ``torch.inference_mode()`` (scan or steps), then training (from zero states or from
    where the stream stopped) or no-grad streaming: no "Inference tensors cannot be saved for backward" (S6 and
    Mamba with frozen A_log/D once kept their derived parameters from inference mode; LIB's streaming step read
    the version counter of an inference tensor), and the numbers of a run under ``no_grad`` instead."""
    rng = random.Random(kind)
    layer = random_layer(kind, 3, rng)
    for name, p in layer.named_parameters():
        if name in ("A_log", "D", "conv1d.weight") or rng.random() < 0.3:
            p.requires_grad_(False)
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(5), dtype=DT)
    for how in ("scan", "steps"):
        for after in ("train from zero", "train on", "no_grad scan", "no_grad steps"):
            outs = []
            for mode in (torch.inference_mode, torch.no_grad):
                m = copy.deepcopy(layer)
                with mode():
                    first = m.scan(x[:3]) if how == "scan" else torch.stack([m(xt) for xt in x[:3]])
                if after == "train from zero":
                    m.zero_states()
                if after.startswith("train"):
                    x_in = x.clone().requires_grad_()  # something to train even if every parameter is frozen
                    y = m.scan(x_in[3:5])
                    y.sum().backward()
                    m.detach_states()
                    y_last = m(x_in[5])
                    y_last.sum().backward()
                    y = torch.cat([y, y_last[None]])
                else:
                    with torch.no_grad():
                        y = m.scan(x[3:]) if after == "no_grad scan" else torch.stack([m(xt) for xt in x[3:]])
                grads = [p.grad for p in m.parameters() if p.grad is not None]
                if after.startswith("train"):
                    grads.append(x_in.grad)
                outs.append((first.clone(), y.detach(), grads))
            (f1, y1, g1), (f2, y2, g2) = outs
            assert torch.equal(f1, f2) and torch.equal(y1, y2), f"{kind} {how} then {after}"
            assert len(g1) == len(g2) and all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_batch_feature_and_dtype_changes_mid_stream_are_state_errors(kind):
    """Mid-stream, an input with another batch size, feature size or dtype raises ``tt.StateError`` in every
    mode (the general step, the no-grad streaming paths, scan) and leaves the states as they were (a float64
    input to a float32 stream was silently promoted, and so was the stream; a wrong feature size was a plain
    ValueError)."""
    layer = random_layer(kind, 3, random.Random(kind), dtype=torch.float32)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(2))
    changed = {
        "batch": x[:, :1].repeat(1, 3, 1),
        "feature": torch.randn(4, 2, 4),
        "dtype": x.double(),
    }
    for mode in ("step", "no_grad step", "scan"):
        for what, bad in changed.items():
            # a float32 stream; for spiking types (which promote) also a float64 one, then fed float32
            for start in (x, x.double()) if kind in tt.functional.NAMES else (x,):
                if what == "dtype" and start.dtype == torch.float64:
                    bad = x
                m = copy.deepcopy(layer)
                with torch.no_grad() if mode == "no_grad step" else contextlib.nullcontext():
                    m.scan(start[:2]) if mode == "scan" else [m(xt) for xt in start[:2]]
                    before = _values(m)
                    with pytest.raises(tt.StateError, match="mid-stream"):
                        m.scan(bad[2:]) if mode == "scan" else m(bad[2])
                after = _values(m)
                assert after.keys() == before.keys()
                assert all(torch.equal(after[k], v) for k, v in before.items()), f"{kind} {mode} {what}: states changed"
                m.zero_states()  # a new stream may take another batch size (or dtype, where the layer takes it)
                if what == "batch" or (what == "dtype" and kind in tt.functional.NAMES):
                    m.scan(bad[2:]) if mode == "scan" else m(bad[2])
