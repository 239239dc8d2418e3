"""traceTorch: stateful (spiking, recurrent, state-space) layers for PyTorch.

Every layer keeps its hidden states inside itself, creates them lazily, runs one step per call or a whole
sequence with ``scan``, and can zero, detach, save and load them::

    import torch, tracetorch as tt
    from tracetorch import snn

    model = tt.Model(torch.nn.Linear(16, 64), snn.LIB(64), torch.nn.Linear(64, 4), snn.LI(4))
    y_seq = model.scan(torch.randn(100, 8, 16))   # [T=100, B=8, 16] -> [100, 8, 4]
    model.save_states("stream.safetensors")       # ... later: model.load_states(...) and continue
    model.zero_states()                           # next, unrelated sequence
"""

from . import encoders, export, functional, online, ops, params, rnn, snn, ssm
from ._version import __version__
from .errors import ExportError, StateError, StateLoadError, StateSaveError
from .layer import Layer, step_loop
from .model import Model
from .scan import scan
from .state import Stateful, detach_states, get_states, named_stateful, zero_states
from .state_io import LoadResult, load_states, read_states, save_states, write_states

__all__ = [
    "ExportError",
    "Layer",
    "LoadResult",
    "Model",
    "StateError",
    "StateLoadError",
    "StateSaveError",
    "Stateful",
    "__version__",
    "detach_states",
    "encoders",
    "export",
    "functional",
    "get_states",
    "load_states",
    "named_stateful",
    "online",
    "ops",
    "params",
    "read_states",
    "rnn",
    "save_states",
    "scan",
    "snn",
    "ssm",
    "step_loop",
    "write_states",
    "zero_states",
]
