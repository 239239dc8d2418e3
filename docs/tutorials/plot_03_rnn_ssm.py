"""
Recurrent and state-space layers
================================

``SimpleRNN``, ``LSTM`` and ``GRU`` take ``torch.nn``'s weights; ``S4D``, ``S6`` and ``Mamba`` are state-space
layers whose whole hidden state (Mamba's convolution window included) is a named state. All of them stream one step
at a time and scan whole sequences with the same numbers, and mix with spiking layers in one model.
"""

# %%
import torch

import tracetorch as tt
from tracetorch import rnn, ssm

torch.manual_seed(0)
x = torch.randn(50, 2, 16)
for layer in (rnn.LSTM(16, 32), rnn.GRU(16, 32), ssm.S4D(16, d_state=8), ssm.Mamba(16, d_state=8)):
    with torch.no_grad():
        scanned = layer.scan(x)
        layer.zero_states()
        streamed = torch.stack([layer(x_t) for x_t in x])
    states = {k: tuple(v.shape) for k, v in layer.get_states().items()}
    err = (scanned - streamed).abs().max().item()
    print(f"{type(layer).__name__:5s} out {tuple(scanned.shape)}  states {states}  max |scan - steps| {err:.1e}")

# %%
# An LSTM loads ``nn.LSTMCell`` weights as they are.
cell = torch.nn.LSTMCell(16, 32)
lstm = rnn.LSTM(16, 32)
lstm.load_state_dict(cell.state_dict())
h, c = cell(x[0])
print("same as nn.LSTMCell:", torch.allclose(lstm(x[0]), h, atol=1e-6))

# %%
# A spiking front end and a Mamba block in one model, scanned as a whole.
from tracetorch import snn

model = tt.Model(torch.nn.Linear(16, 32), snn.LIB(32), ssm.Mamba(32, d_state=8), torch.nn.Linear(32, 4))
print(model.scan(x).shape)

# %%
# What streaming looks like: an LSTM's output (one unit) and the size of its cell state, step by step, for an input
# that switches on at step 20 and off at step 35; the scan gives the same curve (dots).
import matplotlib.pyplot as plt

torch.manual_seed(1)
lstm = rnn.LSTM(4, 8)
pulse = torch.zeros(60, 1, 4)
pulse[20:35] = 1.5
with torch.no_grad():
    outs, sizes = [], []
    for x_t in pulse:
        outs.append(lstm(x_t)[0, 0].item())
        sizes.append(lstm.get_states()["c"].norm().item())
    lstm.zero_states()
    scanned = lstm.scan(pulse)[:, 0, 0]

fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
ax1.plot(pulse[:, 0, 0], color="0.7", label="input")
ax1.plot(outs, label="output, streamed")
ax1.plot(scanned, ".", ms=4, label="output, scanned")
ax1.legend(fontsize=8, loc="upper right")
ax2.plot(sizes, color="C2")
ax2.set_ylabel("|cell state c|")
ax2.set_xlabel("time step")
fig.tight_layout()
