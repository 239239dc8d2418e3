"""HubMixin: from_pretrained / save_pretrained / push_to_hub as model methods (PyTorchModelHubMixin's interface) on
the zoo's strict format: a round trip through a local Hub at a pinned revision, registry pins kept, wrong classes
refused."""

from __future__ import annotations

import pytest
import torch
from test_pretrained import stream
from torch import nn

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch import snn

hf = pytest.importorskip("huggingface_hub")
from tracetorch_zoo.testing import LocalHub  # noqa: E402


@zoo.register("test-mixin-snn", family="snn")
class MixinSNN(zoo.HubMixin, tt.Model):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), snn.LIB(hidden), nn.Linear(hidden, 2))
        self.readout = snn.LI(2)

    def forward(self, x):
        return self.readout(self.net(x))


def test_push_then_from_pretrained_at_a_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet"))
    torch.manual_seed(0)
    model = MixinSNN(hidden=6)
    x = torch.randn(12, 2, 3) * 2
    stream(model, x[:5])
    primed = model.save_states()
    expected = stream(model, x[5:])
    with LocalHub(tmp_path / "hub") as hub:
        opts = {"endpoint": hub.endpoint, "token": "t"}
        first = model.push_to_hub("me/mixin", states={"primed": primed}, tag="v1", **opts)
        # pushing again (under the same tag) does not fail; the tag moves to the new commit (safetensors writes
        # metadata in no fixed order, so a snapshot's bytes, and with them the commit, may differ)
        sha = model.push_to_hub("me/mixin", states={"primed": primed}, tag="v1", **opts)
        refs = hf.HfApi(**opts).list_repo_refs("me/mixin")
        assert {t.name: t.target_commit for t in refs.tags}["v1"] == sha
        for revision in ("v1", sha, first):
            loaded = MixinSNN.from_pretrained(
                "me/mixin", revision=revision, states="primed", cache_dir=tmp_path / "c", **opts
            )
            assert loaded.readout.features == 2 and loaded.net[0].out_features == 6
            assert torch.equal(stream(loaded, x[5:]), expected), revision
        with pytest.raises(zoo.HubError, match="no such revision"):
            MixinSNN.from_pretrained("me/mixin", revision="v9", cache_dir=tmp_path / "c", **opts)
        with pytest.raises(ValueError, match="names revision 'v1'"):
            MixinSNN.from_pretrained("hf-hub:me/mixin@v1", revision="v2", **opts)


def test_save_pretrained_and_local_folder(tmp_path):
    model = MixinSNN()
    folder = model.save_pretrained(tmp_path / "m", states={"zero": model.save_states()})
    assert (folder / "README.md").is_file() and (folder / "model.safetensors").is_file()
    loaded = MixinSNN.from_pretrained(folder)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="applies to Hub repositories"):
        MixinSNN.from_pretrained(folder, revision="v1")


def test_builtin_models_have_it_and_keep_the_registry_pins():
    name = "bytelm-mamba.small-v2"
    entry = zoo.get_entry(name)
    model = zoo.bytelm.MambaByteLM.from_pretrained(name, states="preamble")
    assert isinstance(model, zoo.HubMixin) and model.get_states()
    assert zoo.bytelm.MambaByteLM.from_pretrained(name, revision=entry.revision) is not None
    with pytest.raises(zoo.ZooError, match="pinned to revision"):
        zoo.bytelm.MambaByteLM.from_pretrained(name, revision="main")
    with pytest.raises(zoo.IncompatibleFileError, match="not a LSTMByteLM"):
        zoo.bytelm.LSTMByteLM.from_pretrained(name)
