"""The Mamba byte LM's step exported with tracetorch.export runs in onnxruntime from zero and from the entry's
snapshot (batch 1, against an example of batch 2: the batch is dynamic) with eager's logits and states."""

from __future__ import annotations

import warnings

import pytest
import torch

import tracetorch as tt
import tracetorch_zoo as zoo

NAME = "bytelm-mamba.small-v2"


@pytest.mark.parametrize("snapshot", [None, "preamble"])
def test_bytelm_step_in_onnxruntime(snapshot, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert snapshot is None or snapshot in zoo.get_entry(NAME).snapshots
    model = zoo.load(NAME, states=snapshot)
    initial = {k: v.clone() for k, v in model.get_states().items() if v is not None}
    path = tmp_path / "bytelm_step.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = tt.export.to_onnx(model, torch.tensor([10, 32]), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    text = torch.tensor(list(b"Psalms 23:1: The Lord"))
    states = [(initial[k] if initial else z).numpy() for k, z in zip(fn.state_keys, fn.zero_states(1), strict=True)]
    with torch.no_grad():
        for byte in text:
            want = model(byte.view(1))
            got, *states = session.run(None, dict(zip(fn.input_names, [byte.view(1).numpy(), *states], strict=True)))
            torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
    for key, s in zip(fn.state_keys, states, strict=True):
        torch.testing.assert_close(torch.from_numpy(s), model.get_states()[key], rtol=1e-4, atol=1e-4, msg=key)
