"""Byte LMs: step == scan (outputs, final states, gradients), streaming generation, sampling, save/load."""

from __future__ import annotations

import pytest
import torch

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch_zoo.bytelm import LSTMByteLM, MambaByteLM, sample_next

MODELS = {
    "mamba": lambda: MambaByteLM(24, 2, d_state=4),
    "lstm": lambda: LSTMByteLM(20, 2, embed=8),
}


def _perturb(model):
    with torch.no_grad():  # the head starts at zero: make every output depend on everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_equals_scan_from_nonzero_state(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    _perturb(model)
    x = torch.randint(0, 256, (12, 3))
    model.scan(torch.randint(0, 256, (5, 3)))  # a non-zero starting state
    start = {k: v.clone() for k, v in model.get_states().items()}
    y_scan = model.scan(x)
    s_scan = {k: v.clone() for k, v in model.get_states().items()}
    model.load_states(start)
    y_step = torch.stack([model(xt) for xt in x.unbind(0)])
    torch.testing.assert_close(y_step, y_scan, rtol=1e-5, atol=1e-5)
    for k, v in model.get_states().items():
        torch.testing.assert_close(v, s_scan[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_match(name):
    torch.manual_seed(1)
    model = MODELS[name]()
    _perturb(model)
    x = torch.randint(0, 256, (8, 2))
    grads = []
    for mode in ("scan", "step"):
        model.zero_grad()
        tt.zero_states(model)
        y = model.scan(x) if mode == "scan" else torch.stack([model(xt) for xt in x.unbind(0)])
        (y.square().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_stream_bytes_is_seeded_and_continues_the_state():
    torch.manual_seed(0)
    model = MambaByteLM(16, 1, d_state=2)
    _perturb(model)

    def gen(seed):
        tt.zero_states(model)
        g = torch.Generator().manual_seed(seed)
        return b"".join(model.stream_bytes(b"Psalm ", max_bytes=40, temperature=1.0, generator=g))

    a, b, c = gen(0), gen(0), gen(1)
    assert len(a) == 40 and a == b and a != c
    # greedy decoding: the yielded bytes are the argmax of the scan over prompt + generated prefix
    tt.zero_states(model)
    out = b"".join(model.stream_bytes(b"ab", max_bytes=6, temperature=0))
    tt.zero_states(model)
    logits = model.scan(torch.tensor(list(b"ab" + out[:-1])).unsqueeze(-1))
    assert bytes(logits[1:, 0].argmax(-1).tolist()) == out
    with pytest.raises(ValueError, match="max_bytes"):
        next(model.stream_bytes(b"x", max_bytes=-1))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stream_batch_runs_each_prompt_as_its_own_stream(name):
    """Greedy: every stream of a batch yields what stream_bytes yields for its prompt alone, from the same loaded
    state; the starting state is not consumed by the first prompt."""
    torch.manual_seed(2)
    model = MODELS[name]()
    _perturb(model)
    model.scan(torch.randint(0, 256, (6, 1)))  # a non-zero batch-1 starting state, as a loaded snapshot
    start = {k: v.clone() for k, v in model.get_states().items()}
    prompts = [b"Psalm 23", b"", b"In the beginning was"]
    alone = []
    for p in prompts:
        model.load_states({k: v.clone() for k, v in start.items()})
        alone.append(b"".join(model.stream_bytes(p, max_bytes=12, temperature=0)))
    model.load_states(start)
    steps = list(model.stream_batch(prompts, max_bytes=12, temperature=0))
    assert len(steps) == 12 and all(len(s) == len(prompts) for s in steps)
    together = [b"".join(step[i] for step in steps) for i in range(len(prompts))]
    assert together == alone
    assert {tuple(v.shape)[:1] for v in model.get_states().values()} == {(3,)}  # the state holds the batch
    with pytest.raises(ValueError, match="holds a batch of 3"):
        next(model.stream_bytes(b"x"))
    with pytest.raises(ValueError, match="at least one prompt"):
        next(model.stream_batch([]))


def test_sample_next_temperature_and_top_k():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])
    assert sample_next(logits, temperature=0).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 3}
    with pytest.raises(ValueError):
        sample_next(logits, temperature=-1)


def test_bad_input_is_a_clear_error():
    model = MambaByteLM(16, 1)
    with pytest.raises(ValueError, match="integer bytes"):
        model(torch.randn(2))
    with pytest.raises(ValueError, match="2 axes"):
        model.scan(torch.zeros(3, dtype=torch.long))


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LSTMByteLM(12, 1, embed=4)
    _perturb(model)
    model.scan(torch.randint(0, 256, (7, 1)))
    zoo.save_pretrained(
        model, tmp_path / "m", states={"primed": model.save_states()}, golden_inputs=torch.randint(0, 256, (9, 2))
    )
    zoo.verify_golden(tmp_path / "m")
    loaded = zoo.load_pretrained(tmp_path / "m", states="primed")
    x = torch.tensor([65])
    torch.testing.assert_close(loaded(x), model(x))
