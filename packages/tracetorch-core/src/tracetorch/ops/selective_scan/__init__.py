"""Mamba's selective scan (S6) over a whole sequence: the op and everything about it.

* ``reference.py``: :func:`selective_scan_ref`, the step loop (the definition every kernel is tested against);
* ``torch_kernel.py``: the chunked autograd node described below (the CPU, and CUDA without Triton);
* ``triton.py``, ``triton_kernels.py``: the Triton kernels (CUDA).

:func:`selective_scan` picks (Triton on CUDA where it is installed, else the torch kernel).

``h_t = exp(delta_t A) h_{t-1} + (delta_t u_t) B_t``, ``y_t = sum_n C_t h_t + D u_t`` with per-channel ``A``
``[D, N]`` and input-dependent ``delta_t`` ``[batch, D]``, ``B_t``, ``C_t`` ``[batch, N]``.

``selective_scan_ref`` is the plain reference (autograd through a loop of :func:`~tracetorch.functional.ssm.
selective_step`). ``selective_scan`` computes the same numbers as one autograd node with a hand-written backward:

* the forward walks the sequence in chunks of ``chunk`` steps. Per chunk, ``exp(delta A)`` and ``delta u B`` are
  computed for all its steps at once, the recurrence runs one fused ``addcmul`` per step in place, and the
  outputs are one batched matmul against ``C``. Only the state at each chunk start is kept for the backward:
  ``[T / chunk, batch, D, N]`` instead of the ``[T, batch, D, N]`` states autograd would save (several times over).
* the backward walks the chunks in reverse: it recomputes the chunk's states from the saved start, runs the
  reverse-time adjoint ``lam_t = C_t dy_t + exp(delta_{t+1} A) lam_{t+1}`` in place, and turns it into the
  gradients of every input with a handful of batched ops per chunk (``A``'s and ``D``'s summed once).

Both passes walk the batch in blocks of rows (:data:`.torch_kernel.BLOCK_BYTES`): chunk buffers are
``[chunk, rows, N, D]``, reused across chunks and blocks, so they stay in cache; the numbers do not depend on the
blocking.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ...autocast import full_precision
from .. import backend
from . import triton as triton_scan
from .reference import check_inputs, selective_scan_ref
from .torch_kernel import SelectiveScan

__all__ = ["DEFAULT_CHUNK", "selective_scan", "selective_scan_ref"]

DEFAULT_CHUNK = 16


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Selective scan as one autograd node: same arguments and numbers as :func:`selective_scan_ref`.

    ``chunk`` steps share one set of scratch buffers; the backward recomputes states inside each chunk from the
    state saved at its start. Gradients flow to ``u``, ``delta``, ``A``, ``B``, ``C``, ``D`` and ``h0``.
    All tensors must share one dtype and device.
    """
    dt = full_precision(u.device.type, A.dtype)  # under autocast: float32 or wider, never half (tracetorch.autocast)
    if dt is not None:
        u, delta, A, B, C, D, h0 = (None if t is None else t.to(dt) for t in (u, delta, A, B, C, D, h0))
        with torch.autocast(u.device.type, enabled=False):
            return selective_scan(u, delta, A, B, C, D, h0, chunk=chunk)
    check_inputs(u, delta, A, B, C, D, h0)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"selective_scan: chunk must be a positive int, got {chunk!r}")
    if h0 is None:
        h0 = u.new_zeros(u.shape[1], u.shape[2], A.shape[-1])
    # CUDA: the Triton kernels (torch's per-step kernels are launch-bound there)
    if u.is_cuda and backend.allows("triton") and triton_scan.usable(u):
        try:
            return triton_scan.SelectiveScanTriton.apply(u, delta, A, B, C, D, h0, chunk)
        except Exception as exc:  # a kernel that does not compile or launch here: say so once, then torch runs
            triton_scan.disable(f"{type(exc).__name__}: {exc}")
            warnings.warn(f"tracetorch: Triton selective scan disabled ({exc}); using the torch implementation",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
    args = [t.contiguous() for t in (u, delta, A)] + [B, C]  # B, C: any strides (often split views)
    return SelectiveScan.apply(*args, None if D is None else D.contiguous(), h0.contiguous(), chunk)
