"""The autocast policy, in one place.

Under ``torch.autocast`` a layer's recurrence and its hidden states keep the parameters' precision (a state
rounded to bfloat16's 8-bit mantissa at every step drifts), while the matrix products inside the step still
autocast; a float16/bfloat16 input is upcast, and states that an autocast op returned in low precision are cast
back before they are stored, so a stream continues the same with or without autocast (:func:`run_under_autocast`).
The sequence ops run in float32 or wider (:func:`full_precision`). The streaming engines, which run a fixed
sequence of kernels, step aside under autocast and for low-precision inputs (:data:`LOW_PRECISION`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["LOW_PRECISION", "any_autocast", "full_precision", "run_under_autocast", "under_autocast"]

LOW_PRECISION = (torch.float16, torch.bfloat16)
# whether autocast is on for any device: one C call (~0.1 us), for the streaming hot paths; where this torch lacks
# it, the answer is "maybe" (True), and the general path decides
any_autocast = getattr(torch._C, "_is_any_autocast_enabled", None) or (lambda: True)
_has_fast_check = hasattr(torch._C, "_is_any_autocast_enabled")


def under_autocast(x: Tensor) -> bool:
    """True while autocast is on for the input's device (then :func:`run_under_autocast` runs the layer)."""
    if _has_fast_check and not torch.compiler.is_compiling() and not any_autocast():
        return False
    return torch.is_autocast_enabled(x.device.type) and x.is_floating_point()


def run_under_autocast(layer, x: Tensor, sequence: bool) -> Tensor:
    """``layer.forward(x)`` (``sequence=False``) or ``layer.scan(x)`` under autocast, by the policy above."""
    dtype = next((p.dtype for p in layer.parameters() if p.is_floating_point()), torch.float32)
    x = x.to(dtype)
    shape = x.shape[1:] if sequence else x.shape
    layer.check_input(shape)
    state = layer.prepare_states(shape, dtype, x.device)
    params = layer.params(len(shape))
    y, new = layer.sequence(x, state, params) if sequence else layer.step(x, state, params)
    cast = lambda v: v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v  # noqa: E731
    new = {k: cast(v) for k, v in new.items()} if isinstance(new, Mapping) else [cast(v) for v in new]
    layer.store_states(new)
    return y


def full_precision(device_type: str, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype a sequence op runs in when autocast is on for ``device_type`` (float32, or ``dtype`` if wider);
    ``None`` when autocast is off (the op runs in its inputs' dtype)."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.promote_types(torch.float32, dtype)
