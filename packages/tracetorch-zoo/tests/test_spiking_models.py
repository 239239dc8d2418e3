"""The zoo's spiking architectures: step == scan (outputs, final states, gradients) from non-zero states, the
streaming audio front end, clear errors, and one spiking entry published through a local Hub and loaded back."""

from __future__ import annotations

import json

import pytest
import torch

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch_zoo.audio import KeywordSpotter, StreamingLogMel
from tracetorch_zoo.bytelm import SpikingByteLM
from tracetorch_zoo.vision import SpikingConvClassifier


def _perturb(model, scale=0.05):
    with torch.no_grad():  # zero-initialised heads: make every output depend on everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def _kws():
    m = KeywordSpotter(n_fft=32, hop=16, n_mels=6, hidden=12, layers=2, labels=["a", "b", "c"])
    with torch.no_grad():
        m.front.mel.copy_(torch.rand_like(m.front.mel))
    return m


MODELS = {  # name -> (model, per-step input maker [T, B, ...])
    "conv": (
        lambda: SpikingConvClassifier([1, 8, 8], [3, 4], 10, steps=3, mean=0.3, std=0.4),
        lambda t, b: torch.rand(t, b, 1, 8, 8),
    ),
    "kws": (_kws, lambda t, b: 0.1 * torch.randn(t, b, 16)),
    "bytelm-snn": (
        lambda: SpikingByteLM(d_model=16, hidden=24, n_layers=2, tau_range=[2.0, 16.0]),
        lambda t, b: torch.randint(0, 256, (t, b)),
    ),
    "bytelm-snn-no-synapse": (
        lambda: SpikingByteLM(d_model=16, hidden=24, n_layers=2, neuron="RLIB", synapse=False),
        lambda t, b: torch.randint(0, 256, (t, b)),
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_equals_scan_from_nonzero_state(name):
    torch.manual_seed(0)
    make, data = MODELS[name]
    model = make()
    _perturb(model)
    model.eval()  # BatchNorm with running statistics: the same numbers per step and over the sequence
    model.scan(data(4, 3))  # a non-zero start
    start = {k: v.clone() for k, v in model.get_states().items()}
    x = data(9, 3)
    y_scan = model.scan(x)
    final = {k: v.clone() for k, v in model.get_states().items()}
    model.load_states(start)
    y_step = torch.stack([model(xt) for xt in x.unbind(0)])
    torch.testing.assert_close(y_step, y_scan, rtol=1e-5, atol=1e-5)
    for k, v in model.get_states().items():
        torch.testing.assert_close(v, final[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_match(name):
    torch.manual_seed(1)
    make, data = MODELS[name]
    model = make()
    _perturb(model)
    x = data(6, 2)
    grads = []
    for mode in ("scan", "step"):
        model.zero_grad()
        tt.zero_states(model)
        y = model.scan(x) if mode == "scan" else torch.stack([model(xt) for xt in x.unbind(0)])
        y.float().square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_front_end_is_streaming_and_normalised_by_its_own_level():
    torch.manual_seed(0)
    fe = StreamingLogMel(n_fft=32, hop=16, n_mels=5, top_db=80.0, level_decay=0.9)
    with torch.no_grad():
        fe.mel.copy_(torch.rand_like(fe.mel))
    audio = torch.randn(2, 16 * 12)
    hops = audio.reshape(2, -1, 16).transpose(0, 1)
    whole = fe.scan(hops)
    fe.zero_states()
    halves = torch.cat([fe.scan(hops[:5]), fe.scan(hops[5:])])  # chunked == whole: the tail carries over
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-6)
    fe.zero_states()
    louder = fe.scan(hops * 10.0)  # a 20 dB louder stream: same features, since the level scales with it
    torch.testing.assert_close(louder, whole, rtol=1e-4, atol=1e-4)
    assert fe.tail.shape == (2, 16) and fe.level.shape == (2, 1)


def test_bad_inputs_are_clear_errors():
    conv = SpikingConvClassifier([1, 8, 8], [2], 4)
    with pytest.raises(ValueError, match=r"expected images \[B, 1, 8, 8\]"):
        conv.classify(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="divisible"):
        SpikingConvClassifier([1, 10, 10], [2, 2], 4)
    kws = _kws()
    with pytest.raises(ValueError, match="one hop of samples"):
        kws(torch.randn(2, 15))
    with pytest.raises(ValueError, match=r"float audio \[B, L\]"):
        kws.frames(torch.randn(17))
    hops = kws.frames(torch.ones(1, 17))  # a last partial hop is padded with zeros
    assert hops.shape == (2, 1, 16) and hops[1, 0, 0] == 1 and hops[1, 0, 1:].abs().sum() == 0
    kws(torch.randn(2, 16))
    with pytest.raises(tt.StateError, match="zero_states"):
        kws(torch.randn(3, 16))  # another batch size mid-stream


def test_kws_classify_continues_from_a_snapshot():
    torch.manual_seed(0)
    model = _kws()
    _perturb(model)
    model.eval()
    noise = 0.01 * torch.randn(1, 16 * 20)
    with torch.no_grad():
        model.scan(model.frames(noise))
        warm = model.save_states()
        clip = 0.3 * torch.randn(1, 16 * 10)
        a = model.classify(clip)
        model.load_states(warm)
        b = model.classify(clip)
        model.zero_states()
        cold = model.classify(clip)
    assert torch.equal(a, b) and not torch.equal(a, cold)


def test_a_spiking_entry_published_to_a_local_hub_loads_at_its_pinned_revision(tmp_path, monkeypatch):
    """tracetorch_zoo.publish -> local test Hub -> registry entry (pinned sha) -> download into a fresh cache ->
    load with the snapshot: the same stream as the model that was published."""
    pytest.importorskip("huggingface_hub")
    from tracetorch_zoo.publish import publish
    from tracetorch_zoo.testing import LocalHub

    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))
    torch.manual_seed(0)
    model = _kws()
    _perturb(model)
    model.eval()
    with torch.no_grad():
        model.scan(model.frames(0.01 * torch.randn(1, 16 * 8)))
    snapshot = model.save_states()
    clip = 0.2 * torch.randn(1, 16 * 6)
    with torch.no_grad():
        want = model.scan(model.frames(clip))
    metrics = [{"name": "accuracy", "type": "accuracy", "value": 0.5, "dataset": {"id": "x/y", "name": "Y"}}]
    hub_dir, registry = tmp_path / "hub", tmp_path / "registry"
    path = publish(
        model,
        name="snn-keyword-spotter.test",
        repo_id="tracetorch/kws-test",
        work_dir=tmp_path / "work",
        tag="t1",
        states={"noise": snapshot},
        state_info={"noise": {"meaning": "after noise"}},
        metadata={"metrics": metrics, "license": "mit", "task": "audio-classification"},
        golden_inputs=model.frames(clip[:, :64].repeat(2, 1)),
        license="MIT",
        local_hub=hub_dir,
        registry_dir=registry,
        embed=True,
    )
    entry = zoo.Entry.from_json(json.loads(path.read_text()))
    assert entry.snapshots == ("noise",) and len(entry.revision) == 40
    assert (registry / "embedded" / "snn-keyword-spotter.test" / "model.safetensors").is_file()
    zoo.register_entry(entry.__class__(**{**entry.to_json(), "snapshots": entry.snapshots, "embedded": None}),
                       replace=True)  # fmt: skip
    with LocalHub(hub_dir) as hub:  # the same folder, served again: the pushed commit is there
        loaded = zoo.load("snn-keyword-spotter.test", states="noise", endpoint=hub.endpoint,
                          cache_dir=tmp_path / "fresh-cache")  # fmt: skip
    with torch.no_grad():
        got = loaded.scan(loaded.frames(clip))
    assert torch.equal(got, want)
    card = (tmp_path / "work" / "snn-keyword-spotter.test" / "README.md").read_text()
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert data.license == "mit" and data.eval_results[0].dataset_type == "x/y"
