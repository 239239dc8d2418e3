"""
Writing your own layer
======================

Subclass ``tt.Layer``: declare states and parameters in ``__init__``, write ``step`` as a call to a pure function,
and ``scan``, state handling, saving and loading all work. Subclassing a library layer to change its math works the
same way: override ``step``, and every mode (streaming, no-grad, ``scan``) runs the override.
"""

# %%
import torch

import tracetorch as tt
from tracetorch import snn


class Adaptive(tt.Layer):
    """A leaky integrator whose threshold rises after each spike and relaxes back (a minimal adaptive neuron)."""

    def __init__(self, n: int):
        super().__init__(n)
        self.define_state("mem")
        self.define_state("adapt")
        self.define_decay("beta", 0.9)  # stored raw, read through a sigmoid: always in (0, 1)
        self.define_decay("rho", 0.95)

    def step(self, x, state, params):
        mem = params["beta"] * state["mem"] + x
        spikes = (mem >= 1.0 + state["adapt"]).to(x.dtype)
        mem = mem - spikes * (1.0 + state["adapt"])
        adapt = params["rho"] * state["adapt"] + 0.5 * spikes
        return spikes, {"mem": mem, "adapt": adapt}


layer = Adaptive(4)
x = torch.full((60, 1, 4), 0.4)
steps = torch.stack([layer(x_t) for x_t in x])
layer.zero_states()
print("scan == steps:", torch.equal(layer.scan(x), steps))
print("inter-spike intervals grow as the threshold adapts:", torch.nonzero(steps[:, 0, 0]).flatten().tolist())

# %%
# Changing a library layer's math: the override runs everywhere, the fast paths step aside.


class ClippedLIB(snn.LIB):
    def step(self, x, state, params):
        return super().step(x.clamp(-1, 1), state, params)


clipped = ClippedLIB(4)
x = torch.randn(30, 2, 4) * 3
with torch.no_grad():
    a = torch.stack([clipped(x_t) for x_t in x])
    clipped.zero_states()
    b = clipped.scan(x)
print("reference path:", ClippedLIB.reference_only, " scan == steps:", torch.equal(a, b))
