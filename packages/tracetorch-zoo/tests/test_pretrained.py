"""save_pretrained / load_pretrained: round trip of config, weights and state snapshots, and every refusal."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch import snn


@zoo.register("test-tiny-snn")
class TinySNN(tt.Model):
    def __init__(self, n_in: int = 3, hidden: int = 8, n_out: int = 2, beta: float = 0.9) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), snn.LIB(hidden, beta=beta), nn.Linear(hidden, n_out))
        self.readout = snn.LI(n_out)

    def forward(self, x):
        return self.readout(self.net(x))


@zoo.register("test-other")
class Other(tt.Model):
    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.li = snn.LI(n)

    def forward(self, x):
        return self.li(x)


def stream(model, x):
    with torch.no_grad():
        return torch.stack([model(xt) for xt in x.unbind(0)])


def test_round_trip_weights_config_and_snapshot(tmp_path):
    torch.manual_seed(0)
    model = TinySNN(hidden=16, beta=0.8)
    x = torch.randn(40, 4, 3) * 2
    stream(model, x[:20])
    primed = model.save_states()
    expected = stream(model, x[20:])
    metrics = [{"name": "bits per byte", "type": "bpb", "value": 1.5, "dataset": "tdavid", "split": "test"}]
    meta = {"bpb": 1.5, "metrics": metrics, "license": "mit", "experiment": "tiny/v1"}
    path = zoo.save_pretrained(model, tmp_path / "tiny", states={"primed": primed}, metadata=meta)
    cfg = zoo.read_config(path)
    assert cfg["architecture"] == "test-tiny-snn"
    assert cfg["init_args"] == {"n_in": 3, "hidden": 16, "n_out": 2, "beta": 0.8}
    assert cfg["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert cfg["metadata"] == meta
    card = (path / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: tracetorch" in card and "value: 1.5" in card
    assert "| bits per byte | 1.5 | tdavid | test |" in card and "tiny/v1" in card and "`primed`" in card
    assert zoo.list_snapshots(path) == ["primed"]
    loaded = zoo.load_pretrained(path, states="primed")
    assert not loaded.training
    assert torch.equal(stream(loaded, x[20:]), expected)  # weights and the primed state, bit-exact
    fresh = zoo.load_pretrained(path)
    assert all(v is None for v in fresh.get_states().values())


def test_file_hashes_are_recomputable(tmp_path):
    path = zoo.save_pretrained(TinySNN(), tmp_path / "m", states={"s": TinySNN().save_states()})
    hashes = zoo.file_hashes(path)
    assert set(hashes) == {"README.md", "config.json", "model.safetensors", "states/s.safetensors"}
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:-8])
    assert zoo.file_hashes(path)["model.safetensors"] != hashes["model.safetensors"]


def test_refusals(tmp_path):
    model = TinySNN()
    path = zoo.save_pretrained(model, tmp_path / "m", states={"s": model.save_states()})
    with pytest.raises(FileExistsError):
        zoo.save_pretrained(model, path)
    with pytest.raises(FileNotFoundError, match="available: s"):
        zoo.load_pretrained(path, states="nope")
    # a snapshot from another architecture
    other = Other()
    other(torch.randn(2, 3))
    other_path = zoo.save_pretrained(other, tmp_path / "o", states={"x": other.save_states()})
    (path / "states" / "x.safetensors").write_bytes((other_path / "states" / "x.safetensors").read_bytes())
    with pytest.raises(zoo.IncompatibleFileError, match="belongs to architecture 'test-other'"):
        zoo.load_pretrained(path, states="x")
    # unknown architecture, with a suggestion
    cfg = json.loads((path / "config.json").read_text())
    cfg["architecture"] = "test-tiny-sn"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.UnknownArchitectureError, match="did you mean 'test-tiny-snn'"):
        zoo.load_pretrained(path)
    # written by a newer core
    cfg["architecture"], cfg["tracetorch_core_version"] = "test-tiny-snn", "99.0.0"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.IncompatibleFileError, match="upgrade tracetorch-core"):
        zoo.load_pretrained(path)
    # weights of another shape, and a truncated weights file
    cfg["tracetorch_core_version"] = tt.__version__
    cfg["init_args"]["hidden"] = 9
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.IncompatibleFileError, match="does not fit"):
        zoo.load_pretrained(path)
    cfg["init_args"]["hidden"] = 8
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:-20])
    with pytest.raises(zoo.IncompatibleFileError, match="could not read"):
        zoo.load_pretrained(path)


def test_nothing_half_written_and_registration_errors(tmp_path):
    with pytest.raises(TypeError):
        zoo.save_pretrained(TinySNN(), tmp_path / "bad", metadata={"x": object()})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="not a registered architecture"):
        zoo.save_pretrained(nn.Linear(2, 2), tmp_path / "lin")
    with pytest.raises(ValueError, match="lowercase words"):
        zoo.register("Bad_Name")
    with pytest.raises(TypeError, match=r"\*args"):

        @zoo.register("test-varargs")
        class VarArgs(tt.Model):
            def __init__(self, *layers):
                super().__init__()

    assert "test-tiny-snn" in zoo.architecture_names()


def test_publish_tag_and_load_at_a_pinned_revision_through_a_local_hub(tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    from tracetorch_zoo.testing import LocalHub

    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))  # hf_xet's session logs stay out of $HOME
    torch.manual_seed(0)
    model = TinySNN()
    x = torch.randn(30, 2, 3) * 2
    stream(model, x[:10])
    path = zoo.save_pretrained(model, tmp_path / "tiny", states={"primed": model.save_states()})
    expected = stream(model, x[10:])
    with LocalHub(tmp_path / "hub") as hub:
        api = hf.HfApi(endpoint=hub.endpoint, token="test")
        api.create_repo("tracetorch/tiny")
        api.upload_folder(repo_id="tracetorch/tiny", folder_path=path, commit_message="tiny v1")
        api.create_tag("tracetorch/tiny", tag="v1")
        sha = hub.resolve("tracetorch/tiny", "v1")
        cfg = json.loads((path / "config.json").read_text())
        cfg["metadata"]["note"] = "a later commit"
        (path / "config.json").write_text(json.dumps(cfg))
        api.upload_folder(repo_id="tracetorch/tiny", folder_path=path, commit_message="moves main, not v1")
        assert hub.resolve("tracetorch/tiny", "main") != sha
        local = hf.snapshot_download(
            "tracetorch/tiny", revision=sha, endpoint=hub.endpoint, cache_dir=tmp_path / "cache", token="test"
        )
    assert len(sha) == 40 and f"snapshots/{sha}" in str(local)
    assert set(zoo.file_hashes(local)) == {"README.md", "config.json", "model.safetensors", "states/primed.safetensors"}
    assert "note" not in zoo.read_config(local)["metadata"]  # the pinned revision, not main
    loaded = zoo.load_pretrained(local, states="primed")
    assert torch.equal(stream(loaded, x[10:]), expected)


def test_full_layout_results_experiment_config_snapshot_info_and_golden(tmp_path):
    torch.manual_seed(0)
    model = TinySNN()
    x = torch.randn(12, 4, 3) * 2
    stream(model, x)
    exp_cfg = tmp_path / "config.yaml"
    exp_cfg.write_text("# nox -s 'reproduce(tiny, v1)'\nlr: 0.001\n")
    path = zoo.save_pretrained(
        model,
        tmp_path / "m",
        states={"primed": model.save_states()},
        state_info={"primed": {"steps_consumed": "12", "primed_on": "random clicks"}},
        results={"bpb": 1.5, "git_sha": "abc"},
        experiment_config=exp_cfg,
        golden_inputs=torch.randn(6, 2, 3),
    )
    assert set(zoo.file_hashes(path)) == {
        "README.md", "config.json", "model.safetensors", "results.json", "experiment/config.yaml",
        "states/primed.safetensors", "test/golden.safetensors",
    }  # fmt: skip
    assert json.loads((path / "results.json").read_text()) == {"bpb": 1.5, "git_sha": "abc"}
    _, meta = tt.read_states(path / "states" / "primed.safetensors")
    assert meta["batch_size"] == "4" and meta["steps_consumed"] == "12" and meta["primed_on"] == "random clicks"
    assert model.get_states()["readout.mem"] is not None  # writing the golden file kept the model's stream
    zoo.verify_golden(path)
    # a model whose weights no longer produce the golden outputs is caught
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    weights["net.0.bias"] = weights["net.0.bias"] + 1.0
    save_file(weights, path / "model.safetensors")
    with pytest.raises(zoo.IncompatibleFileError, match=r"outputs \(scan\) differ"):
        zoo.verify_golden(path)
