"""Hidden states: the ``Stateful`` base and the walk over one model's tree.

Every module that owns hidden states (layers, models, learners) derives from :class:`Stateful`. Its states
live in one ordered dict, ``_states``, name -> tensor or ``None`` (``None`` = not created yet; the next
forward creates it from the input's shape, dtype and device). Keeping them out of ``_parameters`` and
``_buffers`` means they never enter ``state_dict()``, optimisers, or DDP's buffer broadcast, while
``_apply`` below makes them follow ``.to(device, dtype)``, ``.half()`` and ``.cuda()`` like buffers do.

The tree operations (zero, detach, collect, and the file I/O in ``state_io``) walk the module tree of the
model they are called on, never a global registry, so resetting one model cannot touch another. The walk
follows registered submodules and plain Python containers (lists, tuples, dicts) held in public attributes,
visits every module once, and survives cycles and back-references.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Stateful", "detach_states", "get_states", "named_stateful", "zero_states"]


class Stateful(nn.Module):
    """Base class of every module that owns hidden states.

    Subclasses declare states with :meth:`define_state`; a declared state reads as an attribute
    (``layer.mem``) and is ``None`` until the first forward creates it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._states: dict[str, Tensor | None] = {}

    # -- declaration and attribute access ---------------------------------------------------------------

    def define_state(self, name: str) -> None:
        """Declare a hidden state called ``name`` (created lazily, reset to ``None`` by ``zero_states``)."""
        if not name.isidentifier():
            raise ValueError(f"state name must be a Python identifier, got {name!r}")
        if name in self._states:
            raise ValueError(f"{type(self).__name__} already has a state called {name!r}")
        if hasattr(self, name):  # attributes, parameters, buffers, submodules, a layer's constrained parameters
            raise ValueError(f"{type(self).__name__} already has an attribute called {name!r}")
        self._states[name] = None

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of this module's own states, in declaration order."""
        return tuple(self._states)

    def check_state_tensor(self, name: str, value: Tensor) -> str | None:
        """Why ``value`` cannot be loaded as state ``name`` (``None`` if it can). Layers check shapes."""
        if not (value.is_floating_point() or value.is_complex()):
            return f"hidden states are floating point, got {value.dtype}"
        return None

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: parameters, buffers and submodules (as nn.Module would), then
        # hidden states, then a layer's constrained parameters - one frame, since layers look up submodules
        # on every step.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules", "_states"):
            values = d.get(store)
            if values is not None and name in values:
                return values[name]
        constraints = d.get("_constraints")
        if constraints is not None and name in constraints:
            return self.effective(name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        states = self.__dict__.get("_states")
        if states is not None and name in states:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"state {name!r} must be a tensor or None, got {type(value).__name__}")
            states[name] = value
            return
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        # Copies (deepcopy, pickle) take the states' values, not their autograd graphs: a mid-stream state is
        # usually a non-leaf tensor, which deepcopy refuses (e.g. when making a weight-EMA copy of a model).
        state = super().__getstate__()
        state["_states"] = {k: None if v is None else v.detach() for k, v in self._states.items()}
        return state

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # States follow .to()/.half()/.cuda() like buffers. Same no_grad as nn.Module uses for parameters.
        with torch.no_grad():
            for name, s in self._states.items():
                if s is not None:
                    self._states[name] = fn(s)
        return self

    # -- operations on the whole tree below this module --------------------------------------------------

    def zero_states(self) -> None:
        """Forget every hidden state in this module's tree (they are re-created at the next forward)."""
        zero_states(self)

    def detach_states(self) -> None:
        """Cut the autograd graph behind every hidden state in the tree (truncated BPTT), keeping values."""
        detach_states(self)

    def TTcompile(self) -> None:  # noqa: N802 - name kept from the original traceTorch
        """Fold every constrained parameter in the tree into its effective value, for inference.

        Outputs are identical before and after; ``state_dict`` keys do not change. Folded parameters receive
        no gradient: call :meth:`TTdecompile` before training again.
        """
        for _, m in named_stateful(self):
            m._fold(True)

    def TTdecompile(self) -> None:  # noqa: N802
        """Undo :meth:`TTcompile`: parameters are read through their constraints again (exactly as before)."""
        for _, m in named_stateful(self):
            m._fold(False)

    def _fold(self, on: bool) -> None:
        """Layers with constrained parameters override this; other stateful modules have nothing to fold."""

    def get_states(self) -> dict[str, Tensor | None]:
        """Every hidden state in the tree by key (``path.name``), as live references (no copy)."""
        return get_states(self)

    def save_states(self, path=None, metadata: dict[str, str] | None = None) -> dict[str, Tensor | None]:
        """Snapshot every hidden state (detached copies); also write them to ``path`` when given.

        ``path`` ending in ``.safetensors`` (recommended) or ``.pt``; the write is atomic. ``metadata``
        (str -> str) is stored in the file. Returns the snapshot dict (``None`` for states not created).
        """
        from .state_io import save_states

        return save_states(self, path, metadata=metadata)

    def load_states(self, source, strict: bool = True):
        """Load states saved by :meth:`save_states` from a path or a dict; see :func:`tracetorch.load_states`."""
        from .state_io import load_states

        return load_states(self, source, strict=strict)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def named_stateful(root: nn.Module) -> Iterator[tuple[str, Stateful]]:
    """Yield ``(path, module)`` for every :class:`Stateful` module in ``root``'s tree, each once.

    Paths use the same dotted names as ``named_modules()``; modules held in plain lists, tuples and dicts
    of public attributes get ``attr.<index or key>``. The order is deterministic (registration order).
    """
    seen: set[int] = set()

    def visit(obj: Any, prefix: str) -> Iterator[tuple[str, Stateful]]:
        if id(obj) in seen:
            return
        if isinstance(obj, nn.Module):
            seen.add(id(obj))
            if isinstance(obj, Stateful):
                yield prefix, obj
            for name, child in obj._modules.items():
                if child is not None:
                    yield from visit(child, _join(prefix, name))
            for name, value in obj.__dict__.items():
                if not name.startswith("_") and isinstance(value, (list, tuple, dict)):
                    yield from visit(value, _join(prefix, name))
        elif isinstance(obj, (list, tuple, dict)):
            seen.add(id(obj))
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            for key, value in items:
                if isinstance(value, (nn.Module, list, tuple, dict)):
                    yield from visit(value, _join(prefix, str(key)))

    yield from visit(root, "")


def zero_states(module: nn.Module) -> None:
    """Set every hidden state in ``module``'s tree to ``None`` (works on any ``nn.Module``), and drop the
    parameters cached for streaming (re-derived at the next step; this is how updates made through ``p.data``,
    which PyTorch's version counters do not see, reach a stream)."""
    for _, m in named_stateful(module):
        for name in m._states:
            m._states[name] = None
        vars(m).pop("_stream_cache", None)
        vars(m).pop("_stream_fast", None)


def detach_states(module: nn.Module) -> None:
    """Detach every hidden state in ``module``'s tree from its autograd graph (works on any ``nn.Module``)."""
    for _, m in named_stateful(module):
        for name, s in m._states.items():
            if s is not None:
                m._states[name] = s.detach()


def get_states(module: nn.Module) -> dict[str, Tensor | None]:
    """All hidden states of ``module``'s tree, keyed ``path.state_name``, as live references."""
    out: dict[str, Tensor | None] = {}
    for path, m in named_stateful(module):
        for name, s in m._states.items():
            out[_join(path, name)] = s
    return out
