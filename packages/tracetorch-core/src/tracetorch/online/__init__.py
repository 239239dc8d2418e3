"""Constant-memory online learning: exact per-layer gradients from eligibility traces, one step at a time.

* :class:`OnlineLearner` wraps a chain model and an optimiser: ``y = learner.step(x_t, target_t)``.
* :class:`EligibilityUnit` is the per-layer engine (real-time recurrent learning for element-wise layers).
* :class:`TruncatedLearner` learns online with any stateful model (LSTM, GRU, Mamba, ...): truncated BPTT over
  windows, constant memory.
* :class:`TraceLearner` is the original traceTorch's trace learning (input traces, a one-step rate window).
* :class:`RewardLearner` learns from rewards (REINFORCE with a baseline; ``engine="exact"`` or REFLECT
  ``engine="trace"``).

Supported layers: the 32 spiking types of :mod:`tracetorch.snn` (each optionally fed by an ``nn.Linear``)
and stateless modules; other stateful layers raise :class:`UnsupportedLayerError` (use :class:`TruncatedLearner`).
"""

from .eligibility import EligibilityUnit
from .learner import SUPPORTED, OnlineLearner, UnsupportedLayerError, online_plan
from .reward import RewardLearner
from .trace import TraceLearner, TraceUnit, rate_estimate
from .truncated import TruncatedLearner

__all__ = [
    "SUPPORTED",
    "EligibilityUnit",
    "OnlineLearner",
    "RewardLearner",
    "TraceLearner",
    "TraceUnit",
    "TruncatedLearner",
    "UnsupportedLayerError",
    "online_plan",
    "rate_estimate",
]
