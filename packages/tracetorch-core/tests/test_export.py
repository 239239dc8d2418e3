"""tracetorch.export: a step (or a chunk of steps) exported as ``(x, *states) -> (y, *next_states)``, run from zero
and from non-zero states at another batch size than the example, against eager stepping; and exporting a stateful
layer any other way is refused instead of freezing its states into the graph."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch import rnn, snn, ssm


def spiking_chain() -> tt.Model:
    return tt.Model(nn.Linear(6, 16), snn.LIB(16), nn.Linear(16, 8), snn.DSRLITS(8), nn.Linear(8, 3), snn.LI(3))


def lstm_chain() -> tt.Model:
    return tt.Model(rnn.LSTM(6, 12), nn.Linear(12, 4))


def mamba_chain() -> tt.Model:
    return tt.Model(ssm.Mamba(6, d_state=4, d_conv=3, expand=2))


MODELS = {"spiking": spiking_chain, "lstm": lstm_chain, "mamba": mamba_chain}


def stream(model: nn.Module, xs: torch.Tensor, initial: dict[str, torch.Tensor] | None):
    """Eager reference: step ``model`` over ``xs`` from ``initial`` states; returns outputs and final states."""
    tt.zero_states(model)
    if initial is not None:
        tt.load_states(model, initial)
    with torch.no_grad():
        ys = torch.stack([model(x) for x in xs])
    return ys, {k: v.clone() for k, v in tt.get_states(model).items()}


def warm_states(model: nn.Module, batch: int) -> dict[str, torch.Tensor]:
    """Non-zero states: those left by 7 steps of random input."""
    tt.zero_states(model)
    with torch.no_grad():
        for _ in range(7):
            model(torch.randn(batch, 6) * 2)
    states = {k: v.clone() for k, v in tt.get_states(model).items()}
    tt.zero_states(model)
    return states


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("start", ["zero", "warm"])
def test_exported_step_carries_states_like_eager(name, start):
    model = MODELS[name]()
    program = tt.export.export(model, torch.randn(3, 6)).module()
    fn = tt.export.StepFunction(model, torch.randn(3, 6))
    xs = torch.randn(9, 5, 6) * 2  # batch 5: the exported batch is dynamic
    initial = warm_states(model, 5) if start == "warm" else None
    want_y, want_states = stream(model, xs, initial)
    states = [initial[k] for k in fn.state_keys] if initial else fn.zero_states(5)
    ys = []
    for x in xs:
        y, *states = program(x, *states)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys), want_y, rtol=0, atol=1e-6)
    for key, s in zip(fn.state_keys, states, strict=True):
        torch.testing.assert_close(s, want_states[key], rtol=0, atol=1e-6, msg=key)


def test_exported_chunk_equals_the_steps():
    model = spiking_chain()
    xs = torch.randn(8, 4, 6) * 2
    initial = warm_states(model, 4)
    program = tt.export.export(model, xs, chunk=True).module()
    fn = tt.export.StepFunction(model, xs, chunk=True)
    want_y, want_states = stream(model, xs, initial)
    y, *states = program(xs, *[initial[k] for k in fn.state_keys])
    torch.testing.assert_close(y, want_y, rtol=0, atol=1e-6)
    for key, s in zip(fn.state_keys, states, strict=True):
        torch.testing.assert_close(s, want_states[key], rtol=0, atol=1e-6, msg=key)


def test_export_leaves_the_model_as_it_was():
    model = spiking_chain()
    with torch.no_grad():
        model(torch.randn(3, 6))
    before = {k: v.clone() for k, v in model.get_states().items()}
    tt.export.export(model, torch.randn(2, 6))
    after = model.get_states()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_graph_names_and_zero_states():
    model = spiking_chain()
    fn = tt.export.StepFunction(model, torch.randn(2, 6))
    assert fn.state_keys == tuple(model.get_states())  # get_states' keys and order
    assert fn.state_keys[0] == "1.mem" and fn.state_keys[-1] == "5.mem" and len(fn.state_keys) > 3
    assert fn.input_names[:2] == ["x", "state_1_mem"] and fn.output_names[:2] == ["y", "next_state_1_mem"]
    assert fn.input_names[-1] == "state_5_mem" and len(fn.output_names) == len(fn.state_keys) + 1
    zeros = fn.zero_states(7)
    assert all(z.shape[0] == 7 and not z.any() for z in zeros)


@pytest.mark.parametrize("name", list(MODELS))
def test_plain_torch_export_refuses_to_freeze_states(name):
    model = MODELS[name]()
    with torch.no_grad():
        model(torch.randn(2, 6))  # mid-stream: the layers hold states (the LSTM's fast path included)
    with pytest.raises(tt.ExportError, match="freeze"):
        torch.export.export(model, (torch.randn(2, 6),), strict=False)


def test_jit_trace_refuses_to_freeze_states():
    model = spiking_chain()
    with warnings.catch_warnings(), pytest.raises(tt.ExportError, match=r"traced by torch\.jit"):
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (torch.randn(2, 6),))


def test_bad_export_requests_are_export_errors():
    model = spiking_chain()
    with pytest.raises(tt.ExportError, match="batch >= 2"):
        tt.export.export(model, torch.randn(1, 6))
    with pytest.raises(tt.ExportError, match="no hidden states"):
        tt.export.StepFunction(nn.Linear(6, 2), torch.randn(2, 6))
    with pytest.raises(tt.ExportError, match="time first"):
        tt.export.StepFunction(model, torch.randn(6), chunk=True)
    fn = tt.export.StepFunction(model, torch.randn(2, 6))
    with pytest.raises(tt.ExportError, match=f"expected {len(fn.state_keys)} states"):
        fn(torch.randn(2, 6))


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_step_runs_in_onnxruntime_like_eager(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = MODELS[name]()
    path = tmp_path / "step.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = tt.export.to_onnx(model, torch.randn(3, 6), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == fn.input_names
    assert [o.name for o in session.get_outputs()] == fn.output_names
    xs = torch.randn(9, 5, 6) * 2
    for initial in (None, warm_states(model, 5)):
        want_y, want_states = stream(model, xs, initial)
        states = [(initial[k] if initial else z).numpy() for k, z in zip(fn.state_keys, fn.zero_states(5), strict=True)]
        ys = []
        for x in xs:
            y, *states = session.run(None, dict(zip(fn.input_names, [x.numpy(), *states], strict=True)))
            ys.append(torch.from_numpy(y))
        # onnxruntime's kernels round differently; a spike flipped by rounding would show as an error of ~1
        torch.testing.assert_close(torch.stack(ys), want_y, rtol=1e-4, atol=1e-4)
        for key, s in zip(fn.state_keys, states, strict=True):
            torch.testing.assert_close(torch.from_numpy(s), want_states[key], rtol=1e-4, atol=1e-4, msg=key)


def test_readme_export_block_runs(tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    from pathlib import Path

    readme = Path(__file__).resolve().parents[3] / "README.md"
    block = readme.read_text().split("<!-- export:start -->", 1)[1].split("<!-- export:end -->", 1)[0]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README export block", "exec"), namespace)
    assert (tmp_path / "step.onnx").stat().st_size > 0
    fn = namespace["fn"]
    assert fn.input_names == ["x", "state_1_mem", "state_3_mem"] and namespace["y"].shape == (8, 4)
