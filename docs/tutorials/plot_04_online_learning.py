"""
Online learning in constant memory
==================================

Backpropagation through time keeps every step's activations until the backward pass, so its memory grows with the
sequence. ``tt.online.OnlineLearner`` instead carries eligibility traces (``d state / d parameter``) forward and
updates from each step's exact per-layer gradient: its memory is that of one step, however long the stream.

Memory here is what autograd saves for the backward pass, counted tensor by tensor with
``torch.autograd.graph.saved_tensors_hooks`` (a count that does not depend on the allocator or the machine).
"""

# %%
import torch
from torch import nn

import tracetorch as tt
from tracetorch import snn


def make():
    torch.manual_seed(0)
    return tt.Model(nn.Linear(3, 64), snn.LIB(64), nn.Linear(64, 2), snn.LI(2))


class SavedBytes:
    """Peak bytes of the tensors autograd holds for a backward pass, while active."""

    def __init__(self):
        self.live, self.peak = {}, 0

    def pack(self, t):
        self.live[id(t)] = t.numel() * t.element_size()
        self.peak = max(self.peak, sum(self.live.values()))
        return t

    def unpack(self, t):
        self.live.pop(id(t), None)
        return t


def bptt_bytes(T):
    model, counter = make(), SavedBytes()
    x, target = torch.randn(T, 8, 3), torch.randn(T, 8, 2)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        loss = nn.functional.mse_loss(model.scan(x), target)
    loss.backward()
    return counter.peak


def online_bytes(T):
    model, counter = make(), SavedBytes()
    learner = tt.online.OnlineLearner(model, torch.optim.SGD(model.parameters(), lr=1e-3), nn.functional.mse_loss)
    x, target = torch.randn(T, 8, 3), torch.randn(T, 8, 2)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        for x_t, y_t in zip(x, target, strict=True):
            learner.step(x_t, y_t)
    traces = sum(v.numel() * v.element_size() for v in learner.get_states().values() if v is not None)
    return counter.peak + traces  # what one step saves, plus the eligibility traces it carries


lengths = [50, 100, 200, 400, 800]
bptt = [bptt_bytes(T) / 1024 for T in lengths]
online = [online_bytes(T) / 1024 for T in lengths]
for T, a, b in zip(lengths, bptt, online, strict=True):
    print(f"T = {T:4d}: BPTT saves {a:8.1f} KiB, online learning holds {b:6.1f} KiB")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(lengths, bptt, marker="o", label="BPTT (scan + backward)")
ax.plot(lengths, online, marker="o", label="OnlineLearner (exact per-layer gradients)")
ax.set(xlabel="sequence length T", ylabel="KiB held for the gradient", title="memory against sequence length")
ax.set_ylim(bottom=0)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
