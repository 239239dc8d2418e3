"""Property suite over random configurations of every layer family: the 32 spiking types, SimpleRNN/LSTM/GRU and
S4D/S6/Mamba, with random sizes, parameter values, ranks and learnable flags, spike functions, ``dim=`` layouts,
float32/float64, non-zero initial states and chunk splits. Each configuration checks

* scan == the step loop: outputs (bit for bit for the spiking types), final states and every gradient (input,
  parameters, initial states);
* scans over chunks (states carried, not detached) == one scan, gradients included;
* ``save_states`` -> a fresh layer -> ``load_states`` -> continue == the uninterrupted stream, bit for bit
  (through a dict, or a ``.safetensors`` / ``.pt`` file).

Derandomized: configuration ``i`` is drawn from ``random.Random(f"{seed}:{i}")``, the same on every run and
machine, and a failure names it. ``TT_PROPERTY_EXAMPLES`` (default 240) sets how many run, ``TT_PROPERTY_SEED``
(default 0) draws another set; the long profile is ``nox -s properties`` (3000).
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass

import pytest
import torch
from conftest import LAYER_KINDS, LAYOUTS, assert_same_run, random_initial_states, random_layer, run

import tracetorch as tt

EXAMPLES = int(os.environ.get("TT_PROPERTY_EXAMPLES", "240"))
SEED = int(os.environ.get("TT_PROPERTY_SEED", "0"))

# comparison tolerances by (family, dtype); spiking outputs are compared bit for bit
TOL = {
    ("spiking", torch.float64): {"rtol": 1e-9, "atol": 1e-12},
    ("other", torch.float64): {"rtol": 1e-9, "atol": 1e-11},
    ("spiking", torch.float32): {"rtol": 1e-4, "atol": 1e-5},
    ("other", torch.float32): {"rtol": 1e-4, "atol": 1e-5},
}


@dataclass(frozen=True)
class Config:
    index: int
    kind: str
    n: int
    layout: str
    batch: int
    dtype: torch.dtype
    steps: int
    initial: bool
    splits: tuple[int, ...]  # chunk sizes, summing to steps
    resume_at: int  # the stream is saved after this many steps
    resume_by: str  # "steps" or "scan": how the interrupted and the uninterrupted streams run
    via: str | None  # None: a state dict; ".safetensors" / ".pt": a file

    @property
    def spiking(self) -> bool:
        return self.kind in tt.functional.NAMES

    def rng(self) -> random.Random:
        return random.Random(f"{SEED}:{self.index}:layer")


def draw(i: int) -> Config:
    rng = random.Random(f"{SEED}:{i}")
    kind = LAYER_KINDS[(i + SEED) % len(LAYER_KINDS)]  # every kind equally often
    t = rng.randint(2, 8)
    cuts = sorted(rng.sample(range(1, t), rng.randint(1, min(2, t - 1))))
    splits = tuple(b - a for a, b in zip([0, *cuts], [*cuts, t], strict=True))
    return Config(
        index=i,
        kind=kind,
        n=rng.randint(1, 5),
        layout=rng.choice(sorted(LAYOUTS)),
        batch=rng.randint(1, 3),
        dtype=torch.float32 if rng.random() < 0.35 else torch.float64,
        steps=t,
        initial=rng.random() < 0.6,
        splits=splits,
        resume_at=rng.randint(1, t - 1),
        # scan chunks give bit-identical numbers for the spiking types; the others' fused sequence ops may round
        # differently by length, so their interrupted stream is compared step by step
        resume_by=rng.choice(["steps", "scan"]) if kind in tt.functional.NAMES else "steps",
        via=rng.choice([None, None, None, None, ".safetensors", ".pt"]),
    )


CONFIGS = [draw(i) for i in range(EXAMPLES)]


def _stream(layer: torch.nn.Module, x: torch.Tensor, by: str) -> torch.Tensor:
    return layer.scan(x) if by == "scan" else torch.stack([layer(xt) for xt in x.unbind(0)])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.index}-{c.kind}")
def test_random_configuration(cfg: Config, tmp_path):
    dim, shape = LAYOUTS[cfg.layout]
    layer = random_layer(cfg.kind, cfg.n, cfg.rng(), dim=dim, dtype=cfg.dtype)
    gen = torch.Generator().manual_seed(cfg.index)
    x = (torch.randn(cfg.steps, *shape(cfg.n, cfg.batch), generator=gen, dtype=torch.float64) * 1.5).to(cfg.dtype)
    initial = random_initial_states(layer, x[0], gen) if cfg.initial else None
    tol = TOL["spiking" if cfg.spiking else "other", cfg.dtype]

    # scan == step loop; chunked scans == one scan
    scanned = run(layer, x, initial, "scan")
    assert_same_run(scanned, run(layer, x, initial, "steps"), exact_outputs=cfg.spiking, **tol)
    assert_same_run(run(layer, x, initial, "chunks", list(cfg.splits)), scanned, exact_outputs=cfg.spiking, **tol)

    # save -> fresh layer -> load -> continue == uninterrupted
    with torch.no_grad():
        whole = copy.deepcopy(layer)
        first = copy.deepcopy(layer)
        if initial is not None:
            whole.load_states(initial)
            first.load_states(initial)
        want = _stream(whole, x, cfg.resume_by)
        k = cfg.resume_at
        y_first = _stream(first, x[:k], cfg.resume_by)
        source = snapshot = first.save_states()
        if cfg.via is not None:
            source = tmp_path / f"states{cfg.via}"
            first.save_states(source)
        fresh = copy.deepcopy(layer)
        fresh.load_states(source)
        for key, v in fresh.get_states().items():
            assert torch.equal(v, snapshot[key]), f"{cfg}: state {key} changed on the way"
        got = torch.cat([y_first, _stream(fresh, x[k:], cfg.resume_by)])
    assert torch.equal(got, want), f"{cfg}: the resumed stream differs by {(got - want).abs().max().item():g}"
    for key, v in whole.get_states().items():
        assert torch.equal(fresh.get_states()[key], v), f"{cfg}: final state {key} differs"


def test_the_configurations_cover_every_kind_layout_dtype_and_mode():
    if EXAMPLES < 200:
        pytest.skip("a short profile (TT_PROPERTY_EXAMPLES < 200)")
    assert {c.kind for c in CONFIGS} == set(LAYER_KINDS)
    assert {c.layout for c in CONFIGS} == set(LAYOUTS)
    assert {c.dtype for c in CONFIGS} == {torch.float32, torch.float64}
    assert {c.initial for c in CONFIGS} == {True, False} and {c.via for c in CONFIGS} == {None, ".safetensors", ".pt"}
    assert {len(c.splits) for c in CONFIGS} == {2, 3} and {c.resume_by for c in CONFIGS} == {"steps", "scan"}
