"""Shared helpers: run a model both ways (scan and step loop) and collect outputs, final states, gradients."""

from __future__ import annotations

import copy

import pytest
import torch

import tracetorch as tt


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run(
    model: torch.nn.Module,
    x: torch.Tensor,
    initial: dict[str, torch.Tensor] | None,
    mode: str,
    splits: list[int] | None = None,
):
    """Run ``model`` over ``x`` [T, ...] from ``initial`` states, by ``scan``, by a step loop, or (``mode="chunks"``)
    by one ``scan`` per chunk of ``splits`` steps, the states carried from chunk to chunk (not detached).

    Returns ``(y, final_states, grads)`` where grads cover the input, every parameter and every initial
    state, from the loss ``sum(y * w)`` with a fixed random ``w``.
    """
    model = copy.deepcopy(model)
    x = x.detach().clone().requires_grad_(True)
    tt.zero_states(model)
    inits = {}
    if initial is not None:
        inits = {k: v.detach().clone().requires_grad_(True) for k, v in initial.items()}
        tt.load_states(model, dict(inits))
        # load_states copies; re-point the states at the leaves so their gradients can be read
        for key, leaf in inits.items():
            _set_state(model, key, leaf)
    if mode == "scan":
        y = tt.scan(model, x)
    elif mode == "chunks":
        y = torch.cat([tt.scan(model, part) for part in x.split(splits)])
    else:
        y = torch.stack([model(xt) for xt in x.unbind(0)])
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype).to(y.device)
    (y * w).sum().backward()
    grads = {"input": x.grad}
    grads.update({f"param:{n}": p.grad for n, p in model.named_parameters()})
    grads.update({f"init:{k}": v.grad for k, v in inits.items()})
    finals = {k: v.detach() for k, v in tt.get_states(model).items()}
    return y.detach(), finals, grads


def _set_state(model: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    for path, m in tt.named_stateful(model):
        for name in m.state_names:
            if (f"{path}.{name}" if path else name) == key:
                m._states[name] = value
                return
    raise KeyError(key)


def assert_same_run(a, b, exact_outputs: bool = True, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """Compare two ``run`` results: outputs (bit-exact by default), final states, and every gradient."""
    ya, fa, ga = a
    yb, fb, gb = b
    if exact_outputs:
        assert torch.equal(ya, yb), f"outputs differ by {(ya - yb).abs().max().item():g}"
    else:
        torch.testing.assert_close(ya, yb, rtol=rtol, atol=atol)
    assert fa.keys() == fb.keys()
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"final state {k}: {m}")
    assert ga.keys() == gb.keys()
    for k in ga:
        assert (ga[k] is None) == (gb[k] is None), f"gradient {k} present in only one run"
        if ga[k] is not None:
            assert ga[k].abs().sum() > 0 or gb[k].abs().sum() == 0
            torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"grad {k}: {m}")


# per-step input shapes by layout: name -> (dim, shape for n features and batch b)
LAYOUTS = {
    "dense": (-1, lambda n, b=3: (b, n)),
    "conv": (-3, lambda n, b=2: (b, n, 2, 2)),
    "positive_dim": (1, lambda n, b=2: (b, n, 3)),
    "unbatched": (-1, lambda n, b=None: (n,)),
}

# every layer family the core ships: the 32 spiking types, the recurrent cells and the state-space layers
RECURRENT_KINDS = ("SimpleRNN", "LSTM", "GRU")
SSM_KINDS = ("S4D", "S6", "Mamba")
LAYER_KINDS = (*tt.functional.NAMES, *RECURRENT_KINDS, *SSM_KINDS)
SPIKE_FNS = ("sigmoid", "atan", "fast_sigmoid", "triangle", "round", "smooth")


def random_layer(kind: str, n: int, rng, *, dim: int = -1, dtype: torch.dtype = torch.float64) -> tt.Layer:
    """A layer of ``kind`` (:data:`LAYER_KINDS`) on ``n`` features along ``dim``, drawn from ``rng`` (a
    ``random.Random``): a spiking type gets random parameter values, ranks, learnable flags, spike function and
    reset mode (``test_snn_types.random_params``); the others random sizes and their torch-style inits."""
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    if kind in tt.functional.NAMES:
        from test_snn_types import random_params

        kwargs = {}
        for p, v in random_params(kind, n, gen).items():
            rank = rng.choice([0, 1])
            kwargs[p] = v if rank == 1 else float(v[0])
            kwargs[f"{p}_rank"] = rank
            kwargs[f"learn_{p}"] = rng.random() < 0.8
        if tt.functional.NeuronSpec.from_name(kind).fires:
            kwargs["spike_fn"] = rng.choice(SPIKE_FNS)
            kwargs["detach_reset"] = rng.random() < 0.3
        layer = getattr(tt.snn, kind)(n, dim=dim, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.randrange(2**31))
            if kind in RECURRENT_KINDS:
                extra = {"nonlinearity": rng.choice(["tanh", "relu"])} if kind == "SimpleRNN" else {}
                layer = getattr(tt.rnn, kind)(n, rng.randint(1, 5), dim=dim, bias=rng.random() < 0.8, **extra)
            elif kind == "S4D":
                layer = tt.ssm.S4D(n, rng.randint(1, 4), dim=dim)
            elif kind == "S6":
                layer = tt.ssm.S6(n, rng.randint(1, 4), rng.randint(1, 3), dim=dim)
            else:
                layer = tt.ssm.Mamba(n, rng.randint(1, 3), d_conv=rng.randint(2, 4), expand=rng.randint(1, 2), dim=dim)
    return layer.to(dtype)


def random_initial_states(
    layer: torch.nn.Module, x_step: torch.Tensor, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random non-zero states for ``layer`` fed steps like ``x_step`` (shapes from one probe step); the ``pos_`` /
    ``neg_`` branches of dual spiking types get their own sign, as a stream gives them."""
    probe = copy.deepcopy(layer)
    tt.zero_states(probe)
    with torch.no_grad():
        probe(torch.zeros_like(x_step))
    out = {}
    for k, v in tt.get_states(probe).items():
        r = torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.dtype) * 0.5
        name = k.rsplit(".", 1)[-1]
        out[k] = r.abs() if name.startswith("pos_") else -r.abs() if name.startswith("neg_") else r
    return out
