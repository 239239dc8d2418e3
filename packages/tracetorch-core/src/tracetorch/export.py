"""Export a stateful model with its hidden states as named graph inputs and outputs.

A layer keeps its hidden states inside itself; a graph exported straight from it (``torch.export``, ONNX,
``torch.jit.trace``) would bake the states it held at export time in as constants, so the exported model would
start every call from the same state and never carry one forward. Exporting a stateful layer that way is
refused with :class:`~tracetorch.errors.ExportError`. This module exports the pure function instead::

    step = tt.export.StepFunction(model, x)           # (x, *states) -> (y, *next_states)
    ep = tt.export.export(model, x)                    # torch.export.ExportedProgram of that function
    tt.export.to_onnx(model, x, "step.onnx")           # the same as ONNX (dynamo exporter), dynamic batch

    states = step.zero_states()                         # or step.current_states(): the model's own
    y, *states = ep.module()(x, *states)                # carry the states from call to call

``chunk=True`` exports ``T`` steps at once: ``x`` is ``[T, B, ...]`` (``T`` fixed at export) and the function
returns ``[T, B, ...]`` and the states after the last step. The graph runs each layer's reference step (the
definition; no native or Triton kernels), and the model itself is left exactly as it was.

State inputs are named ``state_<key>`` and outputs ``next_state_<key>``, where ``<key>`` is the state's key in
``get_states()`` with dots replaced by underscores (``1.mem`` -> ``state_1_mem``); ``StepFunction.state_keys``
lists the keys in graph order.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ExportError
from .ops.backend import use_backend
from .state import Stateful, named_stateful

__all__ = ["StepFunction", "export", "exporting_states", "to_onnx"]

_local = threading.local()


def exporting_states() -> bool:
    """True inside a :class:`StepFunction` call: hidden states are graph inputs, so tracing a layer is safe."""
    return getattr(_local, "depth", 0) > 0


def refuse_frozen_states(layer: nn.Module) -> None:
    """Raise :class:`ExportError` when ``layer`` is being exported or traced outside :class:`StepFunction`
    (its hidden states would be frozen into the graph as constants)."""
    if exporting_states():
        return
    how = "traced by torch.jit" if torch.jit.is_tracing() else "exported"
    raise ExportError(
        f"{type(layer).__name__} is being {how} with its hidden states inside it: the graph would freeze them as "
        "constants and never carry them between calls. Export the step as a function of its states instead: "
        "tracetorch.export.export(model, x) or tracetorch.export.to_onnx(model, x, path) "
        "(inputs x, *states; outputs y, *next_states)."
    )


def _graph_name(key: str) -> str:
    return key.replace(".", "_")


class StepFunction(nn.Module):
    """``model``'s step (or ``chunk``) as a pure function of its hidden states.

    Args:
        model: any module holding tracetorch states (a ``tt.Model``, a layer, a zoo model).
        example: a per-step input (``[B, ...]``), or ``[T, B, ...]`` with ``chunk=True``; used to find the
            states' shapes by running one step on a copy of the model (the model is not touched).
        chunk: export ``T`` steps (``model.scan`` if it has one, else a step loop) instead of one.

    ``forward(x, *states)`` returns ``(y, *next_states)``, states in the order of ``state_keys``.
    """

    def __init__(self, model: nn.Module, example: Tensor, *, chunk: bool = False) -> None:
        super().__init__()
        if not isinstance(example, Tensor):
            raise ExportError(f"example must be a tensor, got {type(example).__name__}")
        if chunk and example.ndim < 2:
            raise ExportError(f"chunk=True needs an example [T, B, ...] with time first, got {tuple(example.shape)}")
        self.model = model
        self.chunk = chunk
        self.slots: list[tuple[Stateful, str]] = [(m, name) for _, m in named_stateful(model) for name in m._states]
        self.state_keys: tuple[str, ...] = tuple(
            f"{path}.{name}" if path else name for path, m in named_stateful(model) for name in m._states
        )
        if not self.slots:
            raise ExportError(f"{type(model).__name__} holds no hidden states: export it with torch.export directly")
        probe = copy.deepcopy(model)
        probe_slots = [(m, name) for _, m in named_stateful(probe) for name in m._states]
        for m, name in probe_slots:
            m._states[name] = None
        step_input = example[0] if chunk else example
        with torch.no_grad():
            probe(step_input)
        made = [m._states[name] for m, name in probe_slots]
        missing = [k for k, s in zip(self.state_keys, made, strict=True) if s is None]
        if missing:
            raise ExportError(f"one step of {type(model).__name__} did not create the states {missing}")
        self._zeros = [torch.zeros_like(s) for s in made]

    @property
    def input_names(self) -> list[str]:
        """The names of the graph's inputs, ``x`` then ``state_<key>`` for each state."""
        return ["x", *(f"state_{_graph_name(k)}" for k in self.state_keys)]

    @property
    def output_names(self) -> list[str]:
        """The names of the graph's outputs, ``y`` then ``next_state_<key>`` for each state."""
        return ["y", *(f"next_state_{_graph_name(k)}" for k in self.state_keys)]

    def zero_states(self, batch: int | None = None) -> list[Tensor]:
        """The states a fresh stream starts from (zeros), for the example's batch or ``batch`` streams."""
        if batch is None:
            return [z.clone() for z in self._zeros]
        return [z.new_zeros((batch, *z.shape[1:])) for z in self._zeros]

    def current_states(self) -> list[Tensor]:
        """The model's own states now (detached copies; zeros where a state is not created yet)."""
        out = []
        for (m, name), zero in zip(self.slots, self._zeros, strict=True):
            s = m._states[name]
            out.append(zero.clone() if s is None else s.detach().clone())
        return out

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        if len(states) != len(self.slots):
            raise ExportError(f"expected {len(self.slots)} states ({', '.join(self.state_keys)}), got {len(states)}")
        kept = [m._states[name] for m, name in self.slots]
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            for (m, name), s in zip(self.slots, states, strict=True):
                m._states[name] = s
            with use_backend("reference"):
                if self.chunk:
                    own = getattr(type(self.model), "scan", None)
                    y = self.model.scan(x) if callable(own) else torch.stack([self.model(xt) for xt in x.unbind(0)])
                else:
                    y = self.model(x)
            new = tuple(m._states[name] for m, name in self.slots)
        finally:
            _local.depth -= 1
            for (m, name), s in zip(self.slots, kept, strict=True):
                m._states[name] = s
        return (y, *new)

    def example_inputs(self, example: Tensor, states: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """``(example, *states)``, zeros when ``states`` is not given."""
        return (example, *(self.zero_states() if states is None else states))

    def dynamic_shapes(self, example: Tensor) -> dict[str, Any]:
        """A dynamic batch axis for ``x`` (axis 0, or 1 with ``chunk``) and every state of the same batch."""
        axis = 1 if self.chunk else 0
        if example.ndim <= axis:
            raise ExportError(f"dynamic_batch needs a batched example, got shape {tuple(example.shape)}")
        b = example.shape[axis]
        if b < 2:
            raise ExportError(
                f"dynamic_batch needs an example with batch >= 2 (got {b}): torch.export specialises size 1"
            )
        batch = torch.export.Dim("batch")
        states = tuple({0: batch} if z.ndim and z.shape[0] == b else None for z in self._zeros)
        return {"x": {axis: batch}, "states": states}


def export(
    model: nn.Module,
    example: Tensor,
    *,
    states: Sequence[Tensor] | None = None,
    chunk: bool = False,
    dynamic_batch: bool = True,
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model``'s step (or chunk, see :class:`StepFunction`): ``(x, *states) -> (y, *next)``.

    ``states`` are example states (default zeros; they shape the graph, their values do not matter). With
    ``dynamic_batch`` the batch size is a symbol (the example's batch must be >= 2).
    """
    fn = StepFunction(model, example, chunk=chunk)
    args = fn.example_inputs(example, states)
    shapes = fn.dynamic_shapes(example) if dynamic_batch else None
    try:
        return torch.export.export(fn, args, dynamic_shapes=shapes, strict=False)
    except ExportError:
        raise
    except Exception as exc:  # torch's own errors are long; keep them as the cause
        raise ExportError(f"torch.export of {type(model).__name__}'s step failed: {exc}") from exc


def to_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    states: Sequence[Tensor] | None = None,
    chunk: bool = False,
    dynamic_batch: bool = True,
    opset: int | None = None,
) -> StepFunction:
    """Write ``model``'s step (or chunk) as an ONNX graph with named state inputs and outputs.

    Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs the ``onnx`` and ``onnxscript``
    packages). Inputs are ``x, state_<key>...``; outputs ``y, next_state_<key>...`` (see the module docstring).
    The file is written atomically. Returns the :class:`StepFunction`, whose ``zero_states()`` start a stream.
    """
    from .state_io import atomic_write

    fn = StepFunction(model, example, chunk=chunk)
    args = fn.example_inputs(example, states)
    shapes = fn.dynamic_shapes(example) if dynamic_batch else None
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    try:
        program = torch.onnx.export(
            fn,
            args,
            input_names=fn.input_names,
            output_names=fn.output_names,
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
            **kwargs,
        )
    except ExportError:
        raise
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages: {exc}") from exc
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(model).__name__}'s step failed: {exc}") from exc
    with atomic_write(path, suffix=".onnx") as tmp:
        program.save(str(tmp))
    return fn
