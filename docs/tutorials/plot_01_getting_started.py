"""
Getting started: a spiking classifier in 30 lines
=================================================

A two-layer spiking network learns to tell two noisy input patterns apart from the spikes of 100 time steps. The
same model then runs one step at a time (streaming) and all steps at once (``scan``), with the same numbers.
"""

# %%
# The model: linear layers feed binary spiking neurons (``LIB``); a leaky integrator (``LI``) reads out.
import torch

import tracetorch as tt
from tracetorch import snn

torch.manual_seed(0)
model = tt.Model(torch.nn.Linear(20, 64), snn.LIB(64), torch.nn.Linear(64, 2), snn.LI(2))

patterns = torch.rand(2, 20)  # two input rate patterns


def batch(n=32, steps=100):
    labels = torch.randint(0, 2, (n,))
    rates = patterns[labels] * 0.3  # spike probability per step
    return (torch.rand(steps, n, 20) < rates).float(), labels  # [T, B, 20]


opt = torch.optim.Adam(model.parameters(), lr=3e-3)
for it in range(60):
    x, labels = batch()
    model.zero_states()  # every sequence starts from a fresh state
    logits = model.scan(x)[-1]  # the read-out's membrane after the last step: [B, 2]
    loss = torch.nn.functional.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if it % 20 == 0 or it == 59:
        print(f"step {it:2d}  loss {loss.item():.3f}  accuracy {(logits.argmax(1) == labels).float().mean():.2f}")

# %%
# Streaming and ``scan`` give the same outputs: stream a test batch one step at a time, then scan it.
x, labels = batch(256)
model.zero_states()
with torch.no_grad():
    streamed = torch.stack([model(x_t) for x_t in x])  # one call per step
    model.zero_states()
    scanned = model.scan(x)  # one call for the sequence
print("same outputs:", torch.allclose(streamed, scanned, atol=1e-6))
print("test accuracy:", (scanned[-1].argmax(1) == labels).float().mean().item())

# %%
# The read-out's membrane over time for the first four test sequences: evidence accumulates.
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3))
for i in range(4):
    ax.plot(scanned[:, i, 1] - scanned[:, i, 0], label=f"sequence {i} (class {labels[i].item()})")
ax.set(xlabel="time step", ylabel="membrane: class 1 - class 0")
ax.legend(fontsize=8)
fig.tight_layout()
