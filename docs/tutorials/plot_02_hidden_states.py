"""
Hidden states: zero, detach, save, load, scoped resets and truncated BPTT
=========================================================================

Every layer keeps its hidden states inside itself, created lazily from the first input. A model's tree can forget
them (``zero_states``), cut their autograd graph (``detach_states``), save and load them (safetensors), and any of
these can be applied to one part of a model only.
"""

# %%
import tempfile
from pathlib import Path

import torch

import tracetorch as tt
from tracetorch import rnn, snn

torch.manual_seed(0)
encoder = tt.Model(torch.nn.Linear(8, 32), snn.LIB(32))
model = tt.Model(encoder, rnn.LSTM(32, 16), torch.nn.Linear(16, 3))
print({k: None for k in model.get_states()})  # declared, not created yet: None until the first step
model(torch.randn(4, 8))
print({k: tuple(v.shape) for k, v in model.get_states().items()})

# %%
# Save mid-stream, continue, load the snapshot back: the continuation repeats exactly.
xs = torch.randn(20, 4, 8)
with torch.no_grad():
    folder = Path(tempfile.mkdtemp())
    model.save_states(folder / "mid.safetensors")
    first = model.scan(xs)
    model.load_states(folder / "mid.safetensors")
    again = model.scan(xs)
print("continuation repeated exactly:", torch.equal(first, again))

# %%
# A scoped reset: forget the encoder's states only (the walk never leaves the module it is called on).
encoder.zero_states()
print({k: v is None for k, v in model.get_states().items()})

# %%
# Truncated BPTT: carry the states across windows but cut the graph between them, so memory stays bounded by the
# window while the state still remembers everything before it.
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
long_x, long_y = torch.randn(400, 4, 8), torch.randn(400, 4, 3)
model.zero_states()
for start in range(0, 400, 50):
    y = model.scan(long_x[start : start + 50])
    loss = (y - long_y[start : start + 50]).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.detach_states()  # keep the values, drop the graph
    print(f"window {start // 50}: loss {loss.item():.3f}")

# %%
# Changing the batch size mid-stream is an error, never a silent re-initialisation.
try:
    model(torch.randn(7, 8))
except tt.StateError as err:
    print("StateError:", str(err).split(".")[0])
