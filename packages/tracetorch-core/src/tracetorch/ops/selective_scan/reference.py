"""The reference of the selective scan: autograd through a loop of :func:`tracetorch.functional.ssm.selective_step`."""

from __future__ import annotations

import torch
from torch import Tensor

from ...functional.ssm import selective_step

__all__ = ["check_inputs", "selective_scan_ref"]


def check_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, h0: Tensor | None):
    if u.ndim != 3 or u.shape[0] == 0:
        raise ValueError(f"selective_scan: u must be [T, batch, D] with T > 0, got {tuple(u.shape)}")
    t, b, d = u.shape
    n = A.shape[-1]
    want = {"delta": (delta, (t, b, d)), "A": (A, (d, n)), "B": (B, (t, b, n)), "C": (C, (t, b, n))}
    if D is not None:
        want["D"] = (D, (d,))
    if h0 is not None:
        want["h0"] = (h0, (b, d, n))
    for name, (v, shape) in want.items():
        if tuple(v.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(v.shape)}")


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference selective scan: a step loop with autograd.

    Args:
        u: inputs ``[T, batch, D]``.
        delta: positive step sizes ``[T, batch, D]``.
        A: per-channel state matrix (diagonal) ``[D, N]``, negative.
        B, C: input-dependent input/output maps ``[T, batch, N]``, shared by the channels.
        D: skip ``[D]`` or ``None``.
        h0: initial state ``[batch, D, N]`` or ``None`` (zeros).

    Returns:
        ``(y [T, batch, D], h_T [batch, D, N])``.
    """
    check_inputs(u, delta, A, B, C, D, h0)
    h = h0 if h0 is not None else u.new_zeros(u.shape[1], u.shape[2], A.shape[-1])
    ys = []
    for ut, dt, bt, ct in zip(u.unbind(0), delta.unbind(0), B.unbind(0), C.unbind(0), strict=True):
        y, h = selective_step(ut, dt, A, bt, ct, D, h)
        ys.append(y)
    return torch.stack(ys), h
