"""``tt.scan(module, x_seq)``: run any module over a whole sequence, time first.

Dispatch, in order:

1. modules with their own ``scan`` (every ``tt.Layer`` and ``tt.Model``) use it;
2. ``nn.Sequential`` is scanned module by module (each module sees the whole sequence);
3. stateless modules (no hidden state anywhere inside) see all steps at once, time folded into the batch
   axis: ``[T, B, ...] -> [T*B, ...]`` (a ``[T, N]`` sequence of unbatched steps is passed as is);
4. anything else (a stateful block with a custom forward, or a BatchNorm in training mode, whose batch
   statistics would change if steps were pooled) is called once per step.

Steps come from ``unbind``, never from ``x[t]`` in a loop (which would make the backward O(T^2)).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .state import named_stateful

__all__ = ["scan", "scan_chain", "scan_steps"]


def scan(module: nn.Module, x_seq: Tensor) -> Tensor:
    """Run ``module`` over ``x_seq`` ``[T, *step_shape]``; same outputs, final states and gradients as
    calling it once per step. Returns ``[T, *out_shape]``."""
    if not isinstance(x_seq, Tensor) or x_seq.ndim < 2:
        raise ValueError(
            "scan expects a tensor [T, *step_shape] with time first, got "
            f"{tuple(x_seq.shape) if isinstance(x_seq, Tensor) else type(x_seq).__name__}"
        )
    own = getattr(type(module), "scan", None)
    if callable(own):
        return module.scan(x_seq)
    if isinstance(module, nn.Sequential):
        return scan_chain(module, x_seq)
    if _is_stateless(module) and not _batch_coupled(module):
        return _all_steps_at_once(module, x_seq)
    return scan_steps(module, x_seq)


def scan_chain(modules: Iterable[nn.Module], x_seq: Tensor) -> Tensor:
    """Scan a chain of modules, one module at a time over the whole sequence."""
    for m in modules:
        x_seq = scan(m, x_seq)
    return x_seq


def scan_steps(module: nn.Module, x_seq: Tensor) -> Tensor:
    """The reference: call ``module`` once per time step and stack the outputs."""
    ys = [module(x) for x in x_seq.unbind(0)]
    if not all(isinstance(y, Tensor) for y in ys):
        raise TypeError(f"scan: {type(module).__name__} must return one tensor per step")
    return torch.stack(ys)


def _is_stateless(module: nn.Module) -> bool:
    return next(iter(named_stateful(module)), None) is None


def _batch_coupled(module: nn.Module) -> bool:
    """True if the module mixes samples of a batch (so pooling time into the batch would change it)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            return True
    return False


def _all_steps_at_once(module: nn.Module, x_seq: Tensor) -> Tensor:
    if x_seq.ndim == 2:  # [T, N]: unbatched steps, time plays the batch axis
        return module(x_seq)
    t, b = x_seq.shape[:2]
    y = module(x_seq.flatten(0, 1))
    if not isinstance(y, Tensor):
        raise TypeError(f"scan: {type(module).__name__} must return one tensor")
    return y.unflatten(0, (t, b))
