"""
The model zoo: load, snapshots, generate, publish
=================================================

``tracetorch_zoo`` ships pretrained spiking, recurrent and state-space models with named hidden-state snapshots.
Loading is strict and pickle-free, registry entries pin a commit and the sha256 of every file, and the packaged
entries load offline.
"""

# %%
import tempfile
from pathlib import Path

import torch

import tracetorch_zoo as zoo

for name in zoo.list_models():
    entry = zoo.get_entry(name)
    headline = entry.metadata["metrics"][0]
    print(f"{name:36s} {headline['name']}: {headline['value']}   snapshots: {', '.join(entry.snapshots)}")

# %%
# A byte language model streams text from a hidden-state snapshot: the state after reading a preamble.
lm = zoo.load("bytelm-mamba.small-v2", states="preamble")
gen = torch.Generator().manual_seed(0)
text = b"".join(lm.stream_bytes(b"Psalms 23:1: ", max_bytes=160, temperature=0.8, generator=gen))
print(text.decode("utf-8", errors="replace"))

# %%
# Publish a model of your own to a Hub and load it back at its pinned revision. Here the Hub is
# ``tracetorch_zoo.testing.LocalHub``, a Hub-compatible server on 127.0.0.1 that the real client talks to.
import tracetorch as tt
from tracetorch import snn
from tracetorch_zoo.testing import LocalHub


@zoo.register("tutorial-snn", family="snn")
class TutorialSNN(zoo.HubMixin, tt.Model):
    def __init__(self, n: int = 8):
        super().__init__()
        self.net = tt.Model(torch.nn.Linear(3, n), snn.LIB(n), torch.nn.Linear(n, 2), snn.LI(2))

    def forward(self, x):
        return self.net(x)


model = TutorialSNN()
with torch.no_grad():
    model.scan(torch.randn(10, 1, 3))  # a state worth keeping
work = Path(tempfile.mkdtemp())
with LocalHub(work / "hub") as hub:
    sha = model.push_to_hub("me/tutorial-snn", states={"warm": model.save_states()}, tag="v1",
                            endpoint=hub.endpoint, token="token")  # fmt: skip
    again = TutorialSNN.from_pretrained("me/tutorial-snn", revision=sha, states="warm", endpoint=hub.endpoint,
                                        token="token", cache_dir=work / "cache")  # fmt: skip
x = torch.randn(1, 3)
print("pushed commit", sha[:12], "| same next output:", torch.equal(model(x), again(x)))
