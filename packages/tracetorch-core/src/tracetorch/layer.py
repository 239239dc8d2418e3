"""``tt.Layer``: the base of every stateful layer.

A layer is a thin stateful shell around a pure step function ``(x, state, params) -> (y, state)`` from
:mod:`tracetorch.functional`. The shell

* declares named hidden states and creates them lazily from the first input's shape, dtype and device, and
  refuses (``StateError``) to continue a stream whose batch or feature size, dtype or device changed;
* defines parameters: scalar (rank 0) or per-neuron (rank 1), learnable (``nn.Parameter``) or fixed (buffer),
  stored raw and read through a smooth constraint (``params.py``); ``layer.beta`` is the effective value;
* knows which input axis holds the features (``dim=``) and broadcasts per-neuron parameters along it, so one
  class serves ``[B, N]``, ``[B, C, H, W]`` (``dim=-3``) and other layouts without moving any data;
* runs one step per call (streaming) and a whole sequence with :meth:`Layer.scan` (time first), which
  continues from and leaves the hidden state exactly as the step loop would.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .autocast import run_under_autocast, under_autocast
from .errors import StateError
from .params import ConstrainedParameters, normal_tensors
from .state import Stateful

__all__ = ["Layer", "normal_tensors", "step_loop", "under_autocast"]


def step_loop(step, x_seq: Tensor, state: Sequence[Tensor], params: Any) -> tuple[Tensor, Any]:
    """Reference sequence mode: apply ``step`` to each time slice of ``x_seq`` ``[T, ...]`` in order.

    Slices come from ``unbind`` (one autograd node for all of them): indexing ``x_seq[t]`` in the loop would
    make the backward pass O(T^2).
    """
    ys = []
    for x in x_seq.unbind(0):
        y, state = step(x, state, params)
        ys.append(y)
    return torch.stack(ys), state


class Layer(ConstrainedParameters, Stateful):
    """Base class of stateful layers.

    Args:
        features: size of the feature axis of the hidden states (and of the input, unless ``in_features``
            differs): the neurons of a spiking layer (``num_neurons``), the hidden size of an RNN, the channels of
            an SSM.
        dim: which axis of the per-step input holds the features: ``-1`` for ``[B, N]``, ``-3`` for
            ``[B, C, H, W]``. Negative values are recommended; a non-negative one counts from the first axis
            of the per-step input (``scan`` accounts for the extra leading time axis).
        in_features: size of the input's feature axis when it differs from ``num_neurons``.

    Subclasses call :meth:`~tracetorch.Stateful.define_state` and
    :meth:`~tracetorch.params.ConstrainedParameters.define_parameter` (or
    :meth:`~tracetorch.params.ConstrainedParameters.define_decay`,
    :meth:`~tracetorch.params.ConstrainedParameters.define_threshold`) in ``__init__`` and implement :meth:`step`.
    The step receives the states and the parameters as dicts by name and returns the output and the new states (a
    dict, or a sequence in declaration order). A faster whole-sequence path goes in :meth:`sequence`; it must give
    the same numbers as the step loop.

    Subclassing a library layer to change its math: override :meth:`step` (or the family's hook, see
    :attr:`math_hooks`); every mode then runs the override (:attr:`reference_only`). Override :meth:`sequence`
    as well to give the subclass a fast scan of its own.
    """

    #: The methods that define a layer's math one step at a time. The library's fast paths (fused scans, native
    #: kernels, no-grad streaming engines) compute the library's own version of them; a subclass defined outside
    #: tracetorch that overrides any of them gets ``reference_only = True`` and runs its own step everywhere
    #: (``scan`` = the step loop), so ``scan == steps`` holds for it too. Families extend the tuple.
    math_hooks: ClassVar[tuple[str, ...]] = ("step", "params")
    reference_only: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        library = next(c for c in cls.__mro__ if c.__module__.split(".")[0] == "tracetorch")
        cls.reference_only = library.reference_only or any(
            getattr(cls, hook, None) is not getattr(library, hook, None) for hook in cls.math_hooks
        )

    def __init__(self, features: int, dim: int = -1, in_features: int | None = None) -> None:
        super().__init__()
        for what, v in (("features", features), ("in_features", in_features)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{type(self).__name__}: {what} must be a positive int, got {v!r}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"{type(self).__name__}: dim must be an int, got {dim!r}")
        self.features = features
        self.in_features = features if in_features is None else in_features
        self.dim = dim

    @property
    def num_neurons(self) -> int:
        """The spiking layers' name for ``features`` (the size of the states' feature axis)."""
        return self.features

    def params(self, ndim: int) -> Any:
        """Effective parameter values for a per-step input with ``ndim`` axes, shaped to broadcast along
        the feature axis, as a dict in definition order."""
        if self._folded and not self._warned_folded and torch.is_grad_enabled():
            self._warn_if_training_folded()
        names = tuple(self._constraints)
        d = self.feature_dim(ndim)
        values = []
        for name in names:
            v = self.effective(name)
            if v.ndim == 1 and d != -1:
                v = v.view(v.shape + (1,) * (-d - 1))
            values.append(v)
        return dict(zip(names, values, strict=True))

    # -- layout and states ----------------------------------------------------------------------------------

    def feature_dim(self, ndim: int) -> int:
        """The feature axis, as a negative index, for a per-step input with ``ndim`` axes."""
        d = self.dim
        if not -ndim <= d < ndim:
            raise ValueError(
                f"{type(self).__name__}(dim={d}) got a {ndim}-d per-step input: axis {d} does not exist. "
                "dim=-1 suits [B, N] inputs, dim=-3 suits [B, C, H, W]."
            )
        return d - ndim if d >= 0 else d

    def check_input(self, shape: Sequence[int]) -> int:
        """Validate a per-step input shape; returns the (negative) feature axis. A wrong feature size is a
        ``ValueError``, or a ``StateError`` mid-stream (when the layer holds states)."""
        d = self.feature_dim(len(shape))
        if shape[d] != self.in_features:
            msg = (
                f"{type(self).__name__} expects {self.in_features} features along dim {self.dim}, "
                f"got a per-step input of shape {tuple(shape)}"
            )
            if any(s is not None for s in self._states.values()):
                raise StateError(f"{msg}: the feature size changed mid-stream (states were kept as they are)")
            raise ValueError(msg)
        return d

    def state_shape(self, name: str, input_shape: torch.Size) -> torch.Size:
        """Shape of state ``name`` for a per-step input of ``input_shape`` (default: the input's shape with
        ``features`` on the feature axis). Override for states of another shape."""
        if self.in_features == self.features:
            return input_shape
        shape = list(input_shape)
        shape[self.feature_dim(len(shape))] = self.features
        return torch.Size(shape)

    def state_dtype(self, name: str, input_dtype: torch.dtype) -> torch.dtype:
        """The dtype of state ``name`` for per-step inputs of ``input_dtype``: the dtype the step computes in, the
        input's promoted with the layer's floating parameters and buffers. Override for a state kept in another
        precision."""
        dtype = input_dtype
        for t in itertools.chain(self.parameters(), self.buffers()):
            if t.is_floating_point():
                dtype = torch.promote_types(dtype, t.dtype)
        return dtype

    def check_state_tensor(self, name: str, value: Tensor) -> str | None:
        problem = super().check_state_tensor(name, value)
        if problem:
            return problem
        if value.ndim == 0 or not -value.ndim <= self.dim < value.ndim:
            return f"shape {tuple(value.shape)} has no axis {self.dim} (the layer's dim)"
        want = self.state_shape(name, _as_input_shape(self, value.shape))
        if value.shape != want:
            return f"shape {tuple(value.shape)} does not fit {type(self).__name__} (expected {tuple(want)})"
        return None

    def prepare_states(self, input_shape: torch.Size, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        """The current states for a per-step input of ``input_shape`` and ``dtype``: created as zeros (in
        :meth:`state_dtype`) if not yet there, else checked against it: ``StateError`` if the batch or feature
        size, the device or the dtype changed mid-stream. A state made under ``torch.inference_mode()`` is
        continued outside it as a normal tensor with the same values."""
        values = []
        states = self._states
        compiling = torch.compiler.is_compiling()  # dynamo cannot trace is_inference()
        if (compiling and torch.compiler.is_exporting()) or torch.jit.is_tracing():
            from .export import refuse_frozen_states

            refuse_frozen_states(self)  # the states would become constants of the graph
        for name, s in states.items():
            want = self.state_shape(name, input_shape)
            if s is None:
                s = torch.zeros(want, dtype=self.state_dtype(name, dtype), device=device)
            else:
                if s.shape != want or s.device != device:
                    raise StateError(
                        f"{type(self).__name__}: hidden state {name!r} has shape {tuple(s.shape)} on {s.device}, "
                        f"but a per-step input of shape {tuple(input_shape)} on {device} needs {tuple(want)}. "
                        "The batch or feature size (or device) changed mid-stream; call zero_states() to start "
                        "a new stream. States are never re-initialised silently."
                    )
                if s.dtype != dtype and s.dtype != self.state_dtype(name, dtype):
                    raise StateError(
                        f"{type(self).__name__}: hidden state {name!r} is {s.dtype}, but a per-step input of "
                        f"{dtype} needs {self.state_dtype(name, dtype)}. The dtype changed mid-stream; call "
                        "zero_states() to start a new stream, or convert the layer with .to(dtype) (its states "
                        "follow). States are never converted silently."
                    )
                if not (compiling or s.requires_grad) and s.is_inference() and not torch.is_inference_mode_enabled():
                    s = states[name] = s.clone()  # made under inference mode: autograd cannot save it
            values.append(s)
        return dict(zip(self._states, values, strict=True))

    def store_states(self, new_state: Sequence[Tensor] | Mapping[str, Tensor]) -> None:
        """Write the step's returned state back: a sequence in declaration order, or a dict by name."""
        states = self._states
        if len(new_state) != len(states):
            raise RuntimeError(f"{type(self).__name__}.step returned {len(new_state)} states, expected {len(states)}")
        if isinstance(new_state, Mapping):
            for name in states:
                states[name] = new_state[name]
        else:
            for name, value in zip(states, new_state, strict=True):
                states[name] = value

    # -- computation ----------------------------------------------------------------------------------------

    def step(self, x: Tensor, state: Any, params: Any) -> tuple[Tensor, Any]:
        """One time step: a call into a pure function of :mod:`tracetorch.functional`."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(x, state, params)")

    def sequence(self, x_seq: Tensor, state: Any, params: Any) -> tuple[Tensor, Any]:
        """Whole-sequence computation for ``x_seq`` ``[T, ...]``. The default is the reference step loop;
        layers override it with a faster path that gives the same outputs, final state and gradients."""
        return step_loop(self.step, x_seq, state, params)

    def forward(self, x: Tensor) -> Tensor:
        """One time step: ``x`` is the per-step input (e.g. ``[B, N]``); returns the per-step output."""
        if under_autocast(x):
            return run_under_autocast(self, x, sequence=False)
        self.check_input(x.shape)
        state = self.prepare_states(x.shape, x.dtype, x.device)
        y, new_state = self.step(x, state, self.params(x.ndim))
        self.store_states(new_state)
        return y

    def scan(self, x_seq: Tensor) -> Tensor:
        """Run a whole sequence ``x_seq`` ``[T, *step_shape]`` (time first); returns ``[T, *out_shape]``.

        Continues from the current hidden state and leaves the final one in the layer: the same outputs,
        final states and gradients as calling the layer once per step.
        """
        if not isinstance(x_seq, Tensor) or x_seq.ndim < 2:
            raise ValueError(
                f"{type(self).__name__}.scan expects a tensor [T, *step_shape] with time first, got "
                f"{tuple(x_seq.shape) if isinstance(x_seq, Tensor) else type(x_seq).__name__}"
            )
        if x_seq.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.scan got an empty sequence (T = 0)")
        if under_autocast(x_seq):
            return run_under_autocast(self, x_seq, sequence=True)
        step_shape = x_seq.shape[1:]
        self.check_input(step_shape)
        state = self.prepare_states(step_shape, x_seq.dtype, x_seq.device)
        ys, new_state = self.sequence(x_seq, state, self.params(len(step_shape)))
        self.store_states(new_state)
        return ys

    def extra_repr(self) -> str:
        parts = [str(self.features)]
        if self.in_features != self.features:
            parts.append(f"in_features={self.in_features}")
        parts.append(f"dim={self.dim}")
        for name, c in self._constraints.items():
            raw = self.raw(name)
            kind = "learnable" if isinstance(raw, nn.Parameter) and raw.requires_grad else "fixed"
            parts.append(f"{name}=({c.name}, {'per-neuron' if raw.ndim else 'scalar'}, {kind})")
        if self._folded:
            parts.append("TTcompiled")
        return ", ".join(parts)


def _as_input_shape(layer: Layer, state_shape: torch.Size) -> torch.Size:
    """The per-step input shape that would produce a state of ``state_shape`` (used to validate loads)."""
    shape = list(state_shape)
    shape[layer.feature_dim(len(shape))] = layer.in_features
    return torch.Size(shape)
