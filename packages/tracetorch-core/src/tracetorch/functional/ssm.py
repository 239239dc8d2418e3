"""Pure step functions of the state-space layers (``tracetorch.ssm``): input and state in, output and state out.

Layout: channels ``[batch, D]`` for inputs and outputs, states ``[batch, D, N]`` (``N`` = ``d_state``). The
layers move their feature axis last and fold every other axis into the batch before calling these.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "LOG2E",
    "causal_conv_step",
    "causal_conv_step_t",
    "diagonal_step",
    "selective_step",
    "selective_step_t",
    "zoh",
]


def zoh(dt: Tensor, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order-hold discretisation of the diagonal system ``h' = A h + B x`` with step ``dt``.

    ``dt`` ``[D]``, ``A`` and ``B`` ``[D, N]`` (``A < 0``). Returns ``(A_bar, B_bar)`` with
    ``A_bar = exp(dt A)`` and ``B_bar = (A_bar - 1) / A * B`` (computed with ``expm1`` for accuracy at small ``dt A``).
    """
    dtA = dt.unsqueeze(-1) * A
    return torch.exp(dtA), torch.expm1(dtA) / A * B


def diagonal_step(x: Tensor, h: Tensor, A_bar: Tensor, B_bar: Tensor, C: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
    """One step of a time-invariant diagonal SSM (S4D): ``h <- A_bar h + B_bar x``; ``y = sum_n C h + D x``.

    ``x`` ``[batch, D]``, ``h`` ``[batch, D, N]``, ``A_bar``/``B_bar``/``C`` ``[D, N]``, ``D`` ``[D]``.
    Returns ``(y [batch, D], h)``.
    """
    h = torch.addcmul(B_bar * x.unsqueeze(-1), A_bar, h)
    y = torch.addcmul((h * C).sum(-1), D, x)
    return y, h


LOG2E = 1.4426950408889634


def selective_step(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One step of Mamba's selective scan (S6), as its reference ``selective_scan_ref``.

    ``h <- exp(delta A) h + (delta u) B``; ``y = sum_n C h + D u``. Shapes: ``u``, ``delta`` ``[batch, D]``
    (``delta > 0``), ``A`` ``[D, N]``, ``B``, ``C`` ``[batch, N]`` (shared by the channels), ``D`` ``[D]`` or
    ``None``, ``h`` ``[batch, D, N]``. Returns ``(y [batch, D], h)``.

    The work runs on ``h.transpose(-1, -2)`` (channels innermost) and the returned state is a ``[batch, D, N]``
    view of ``[batch, N, D]`` memory: the sum over ``N`` is then a ``[1, N] x [N, D]`` matmul instead of a short
    inner reduction, several times faster on CPU. ``exp`` is computed as ``exp2(x log2 e)`` (equal to rounding,
    and much faster than ``exp`` on the CPUs measured).
    """
    y, h = selective_step_t(u, delta, (A * LOG2E).transpose(-1, -2), B, C, D, h.transpose(-1, -2))
    return y, h.transpose(-1, -2)


def selective_step_t(
    u: Tensor, delta: Tensor, A2t: Tensor, B: Tensor, C: Tensor, D: Tensor | None, ht: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`selective_step` in its working layout: ``A2t = (A log2 e)^T`` ``[N, D]``, state ``ht`` and the
    returned state ``[batch, N, D]``. The layers call this with ``A2t`` computed once per call."""
    dA = torch.mul(delta.unsqueeze(-2), A2t).exp2_()
    ht = torch.mul(B.unsqueeze(-1), (delta * u).unsqueeze(-2)).addcmul_(dA, ht)
    y = torch.matmul(C.unsqueeze(-2), ht).squeeze(-2)
    if D is not None:
        y = torch.addcmul(y, D, u)
    return y, ht


def causal_conv_step(x: Tensor, window: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """One step of a depthwise causal convolution over time.

    ``x`` ``[batch, E]`` (this step), ``window`` ``[batch, E, K-1]`` (the previous ``K-1`` inputs, oldest
    first), ``weight`` ``[E, K]``, ``bias`` ``[E]`` or ``None``. Returns ``(out [batch, E], new window)``;
    ``out = sum_k weight[:, k] * [window, x][..., k] + bias`` - what ``conv1d`` (a cross-correlation) computes
    at the last position of the left-padded sequence. As in :func:`selective_step`, the work runs with time
    before channels and the returned window is a ``[batch, E, K-1]`` view of ``[batch, K-1, E]`` memory.
    """
    out, window_t = causal_conv_step_t(x, window.transpose(-1, -2), weight.t().contiguous(), bias)
    return out, window_t.transpose(-1, -2)


def causal_conv_step_t(x: Tensor, window_t: Tensor, weight_t: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`causal_conv_step` in its working layout: ``window_t`` ``[batch, K-1, E]``, ``weight_t`` ``[K, E]``."""
    full = torch.cat([window_t, x.unsqueeze(-2)], dim=-2)  # [batch, K, E]
    out = (full * weight_t).sum(-2)
    if bias is not None:
        out = out + bias
    return out, full[..., 1:, :]
