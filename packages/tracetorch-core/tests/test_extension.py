"""The extension contract: a user subclass of any layer works, and the math it overrides is the math that runs, in
every mode (grad / no-grad / inference steps, scan, chunked scan)."""

from __future__ import annotations

import copy
import inspect
import random

import pytest
import torch
from conftest import LAYER_KINDS, assert_same_run, random_initial_states, random_layer, run

import tracetorch as tt
from tracetorch import snn

SHIFT, SCALE = 0.25, 0.5


def _shifted_subclass(base_cls: type, hook: str) -> type:
    """A user subclass whose ``hook`` (``step`` or a family's second-level step hook) sees ``SCALE * x + SHIFT``."""

    def shifted(self, x, *rest):
        return getattr(super(cls, self), hook)(SCALE * x + SHIFT, *rest)

    cls = type(f"Shifted{base_cls.__name__}", (base_cls,), {hook: shifted, "__module__": __name__})
    return cls


# the second-level hook each family's step goes through, besides ``step`` itself
SECOND_HOOK = dict.fromkeys(("SimpleRNN", "LSTM", "GRU", "S4D", "S6", "Mamba"), "_flat_step")
CASES = [(k, "step") for k in LAYER_KINDS] + [(k, h) for k, h in SECOND_HOOK.items()]


def _modes(layer: tt.Layer, x: torch.Tensor, initial: dict[str, torch.Tensor]):
    """``{mode: (outputs, final states)}`` of ``layer`` over ``x`` from ``initial``, every way a layer can run."""
    out = {}
    for mode in ("grad-steps", "nograd-steps", "inference-steps", "grad-scan", "nograd-scan", "chunks"):
        m = copy.deepcopy(layer)
        tt.zero_states(m)
        tt.load_states(m, {k: v.clone() for k, v in initial.items()})
        ctx = {"nograd": torch.no_grad(), "inference": torch.inference_mode()}.get(mode.split("-")[0])
        with ctx or torch.enable_grad():
            if mode.endswith("steps"):
                y = torch.stack([m(xt) for xt in x.unbind(0)])
            elif mode == "chunks":
                y = torch.cat([m.scan(part) for part in x.split([2, 3, 1])])
            else:
                y = m.scan(x)
        out[mode] = (y.detach().clone(), {k: v.detach().clone() for k, v in tt.get_states(m).items()})
    return out


@pytest.mark.parametrize("kind, hook", CASES, ids=[f"{k}.{h}" for k, h in CASES])
def test_an_overridden_step_is_the_math_that_runs_in_every_mode(kind, hook):
    """Once the no-grad streaming engines, the fused scans and the native kernels ran the library's own math and
    ignored the override: ``scan == steps`` broke silently for user layers. Now every mode of the subclass equals
    the library layer fed the transformed input."""
    rng = random.Random(f"extension:{kind}:{hook}")
    base = random_layer(kind, 4, rng)
    sub = copy.deepcopy(base)
    sub.__class__ = _shifted_subclass(type(base), hook)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    initial = random_initial_states(base, x[0], torch.Generator().manual_seed(3))

    expected_y, expected_states = _modes(base, SCALE * x + SHIFT, initial)["grad-steps"]
    for mode, (y, states) in _modes(sub, x, initial).items():
        torch.testing.assert_close(y, expected_y, rtol=1e-9, atol=1e-12, msg=lambda m, mode=mode: f"{mode}: {m}")
        assert states.keys() == expected_states.keys()
        for k in states:
            torch.testing.assert_close(states[k], expected_states[k], rtol=1e-9, atol=1e-12)
    # gradients (input, parameters, initial states): scan == steps for the subclass too
    assert_same_run(run(sub, x, initial, "scan"), run(sub, x, initial, "steps"), exact_outputs=False)


@pytest.mark.parametrize("kind", tt.functional.NAMES)
def test_a_plain_subclass_of_a_spiking_type_is_that_type(kind):
    """``class MyLIB(snn.LIB): pass`` once raised ValueError: the neuron type was parsed from the class name."""
    base_cls = getattr(snn, kind)
    sub_cls = type(f"My{kind}", (base_cls,), {"__module__": __name__})
    assert sub_cls.spec is base_cls.spec
    assert inspect.signature(sub_cls) == inspect.signature(base_cls)
    torch.manual_seed(0)
    a = base_cls(5)
    sub = sub_cls(5)
    sub.load_state_dict(a.state_dict())
    x = torch.randn(7, 2, 5)
    torch.testing.assert_close(sub.scan(x), a.scan(x), rtol=0, atol=0)
    assert not sub_cls.reference_only  # nothing overridden: the fast paths still run


def test_a_new_spiking_class_names_its_type_and_may_have_its_own_constructor():
    class Readout(snn.SpikingLayer, neuron="LI"):
        """A fixed-decay readout."""

    class SlowLIF(snn.LIB):
        def __init__(self, n: int, *, dim: int = -1):
            super().__init__(n, 0.95, learn_beta=False, dim=dim)

    assert Readout.spec == snn.LI.spec and "fixed-decay readout" in Readout.__doc__
    assert list(inspect.signature(SlowLIF).parameters) == ["n", "dim"]
    layer = SlowLIF(3)
    assert not layer.raw_beta.requires_grad and torch.allclose(layer.beta, torch.tensor(0.95))
    assert layer.scan(torch.randn(4, 2, 3)).shape == (4, 2, 3)
    with pytest.raises(TypeError, match="neuron="):

        class Nameless(snn.SpikingLayer):  # the class statement is what fails
            pass


def test_online_learning_refuses_a_layer_whose_math_it_cannot_see():
    """Eligibility traces are derived from the neuron's equations; a layer with its own ``step`` has others."""
    sub = _shifted_subclass(snn.LIB, "step")(4)
    with pytest.raises(TypeError, match="overrides step"):
        tt.online.EligibilityUnit(sub)


def test_the_readme_example_of_an_own_layer_holds_in_every_mode():
    """The README's "writing your own layer" block runs, and both of its layers give one set of numbers in every
    mode (grad / no-grad / inference steps, scan, chunked scan)."""
    from pathlib import Path

    readme = Path(__file__).resolve().parents[3] / "README.md"
    block = readme.read_text().split("<!-- own-layer:start -->", 1)[1].split("<!-- own-layer:end -->", 1)[0]
    code = block.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README own-layer block", "exec"), namespace)
    torch.manual_seed(1)
    x = torch.randn(6, 3, 16)
    for layer in (namespace["LeakyIntegrator"](16), namespace["NoisyLIB"](16)):
        initial = random_initial_states(layer, x[0], torch.Generator().manual_seed(2))
        runs = _modes(layer, x, initial)
        want_y, want_states = runs["grad-steps"]
        for mode, (y, states) in runs.items():
            torch.testing.assert_close(y, want_y, rtol=1e-6, atol=1e-6, msg=lambda m, mode=mode: f"{mode}: {m}")
            for k in states:
                torch.testing.assert_close(states[k], want_states[k], rtol=1e-6, atol=1e-6)
