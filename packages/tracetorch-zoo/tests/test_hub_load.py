"""Publishing to a (local) Hub, registry entries pinned to a commit sha, and load(name_or_id) by every route."""

from __future__ import annotations

import pytest
import torch
from test_pretrained import TinySNN, stream

import tracetorch_zoo as zoo

hf = pytest.importorskip("huggingface_hub")
from tracetorch_zoo.testing import LocalHub  # noqa: E402


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A TinySNN with a primed snapshot, saved, pushed to a local Hub and tagged v1."""
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))
    torch.manual_seed(0)
    model = TinySNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    target = torch.randn(20, 8, 2)
    losses = []
    for _ in range(15):  # a small trained model, not a random one
        model.zero_states()
        loss = (model.scan(torch.randn(20, 8, 3)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.zero_states()
    x = torch.randn(30, 2, 3) * 2
    stream(model, x[:10])
    folder = zoo.save_pretrained(
        model, tmp_path / "tiny", states={"primed": model.save_states()}, golden_inputs=torch.randn(8, 2, 3)
    )
    expected = stream(model, x[10:])
    with LocalHub(tmp_path / "hub") as hub:
        sha = zoo.push_to_hub(folder, "tracetorch/tiny", tag="v1", endpoint=hub.endpoint, token="t")
        yield {"hub": hub, "sha": sha, "folder": folder, "x": x[10:], "expected": expected, "tmp": tmp_path}


def entry_for(pub, name="test-tiny-snn.v1", **changes):
    cfg = zoo.read_config(pub["folder"])
    fields = dict(
        name=name,
        repo_id="tracetorch/tiny",
        revision=pub["sha"],
        architecture=cfg["architecture"],
        init_args=cfg["init_args"],
        files=zoo.file_hashes(pub["folder"]),
        snapshots=("primed",),
        license="MIT",
    )
    fields.update(changes)
    return zoo.Entry(**fields)


def test_load_by_registry_name_hub_id_and_sha(published):
    hub, sha = published["hub"], published["sha"]
    opts = {"endpoint": hub.endpoint, "token": "t", "cache_dir": published["tmp"] / "cache"}
    zoo.register_entry(entry_for(published), replace=True)
    assert "test-tiny-snn.v1" in zoo.list_models("test-tiny-*")
    for name_or_id in ("test-tiny-snn.v1", "hf-hub:tracetorch/tiny@v1", f"hf-hub:tracetorch/tiny@{sha}"):
        model = zoo.load(name_or_id, states="primed", **opts)
        assert torch.equal(stream(model, published["x"]), published["expected"]), name_or_id
    # the downloaded files reproduce the golden tensors with scan and step by step
    zoo.verify_golden(zoo.resolve_folder("hf-hub:tracetorch/tiny@v1", **opts))
    # afterwards the client's cache serves the pinned revision without the network
    model = zoo.load("test-tiny-snn.v1", states="primed", cache_dir=opts["cache_dir"], local_files_only=True)
    assert torch.equal(stream(model, published["x"]), published["expected"])


def test_registry_refuses_wrong_hashes_and_unknown_names(published):
    opts = {"endpoint": published["hub"].endpoint, "token": "t", "cache_dir": published["tmp"] / "cache"}
    files = dict(zoo.file_hashes(published["folder"]))
    files["model.safetensors"] = "0" * 64
    zoo.register_entry(entry_for(published, name="test-tiny-snn.bad", files=files), replace=True)
    with pytest.raises(zoo.IncompatibleFileError, match=r"sha256 of model\.safetensors"):
        zoo.load("test-tiny-snn.bad", **opts)
    with pytest.raises(zoo.ZooError, match=r"did you mean 'test-tiny-snn\.bad'"):
        zoo.load("test-tiny-snn.bd", **opts)
    with pytest.raises(zoo.HubError, match="no such revision") as exc:
        zoo.load("hf-hub:tracetorch/tiny@v9", **opts)
    assert isinstance(exc.value.__cause__, hf.errors.RevisionNotFoundError)  # the client's error stays attached


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"revision": "main"}, "full 40-hex commit sha"),
        ({"name": "tiny"}, "architecture.tag"),
        ({"name": "other-arch.v1"}, "must start with its architecture"),
        ({"repo_id": "tiny"}, "owner/name"),
        ({"files": {"config.json": "abc"}}, "sha256"),
    ],
)
def test_entries_are_validated(changes, match):
    fields = dict(
        name="test-tiny-snn.v1",
        repo_id="tracetorch/tiny",
        revision="a" * 40,
        architecture="test-tiny-snn",
        init_args={},
        files={},
    )
    fields.update(changes)
    with pytest.raises(ValueError, match=match):
        zoo.Entry(**fields)


def test_parse_id_and_push_requires_a_saved_model(tmp_path):
    assert zoo.parse_id("hf-hub:org/name@v2") == ("hub", "org/name", "v2")
    assert zoo.parse_id("hf-hub:org/name") == ("hub", "org/name", "main")
    assert zoo.parse_id(tmp_path) == ("local", str(tmp_path), None)
    assert zoo.parse_id("bytelm-mamba.small") == ("registry", "bytelm-mamba.small", None)
    with pytest.raises(ValueError, match="owner/name"):
        zoo.parse_id("hf-hub:noslash")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        zoo.push_to_hub(tmp_path, "org/x")
