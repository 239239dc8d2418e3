"""Triton kernels of the trace op for CUDA: the GPU twin of ``native_trace.inc`` (same variants, slots and
operations; one launch per direction, each program owning a block of elements and looping over time with the
traces, and backward their adjoints and the decays' partial sums, in registers). Optional, as the firing op's
Triton kernels: without Triton (or with ``TRACETORCH_BACKEND=torch``) the linear scans run."""

from __future__ import annotations

from torch import Tensor

from .._triton import LazyKernels, cdiv
from .native import TRACE_BWD_IO, TRACE_FWD_IO, TRACE_PARAMS

__all__ = ["trace_backward", "trace_forward", "triton_status"]

_K = LazyKernels("trace.triton_kernels")
BLOCK = 256

triton_status = _K.status_line
usable = _K.usable
disable = _K.disable


def _flags(variant: str) -> dict:
    return {"DUAL": variant.startswith("d"), "EMA": variant.endswith("e")}


def trace_forward(variant: str, T: int, layout: tuple[int, int, int], flat: dict[str, Tensor], io: dict) -> None:
    """:func:`.native.trace_forward` on CUDA tensors."""
    _, P, J = layout
    n = io["hT"].numel()
    dummy = io["x"].new_zeros(1)
    tensors = [dummy if io.get(k) is None else io[k] for k in TRACE_FWD_IO]
    params = [flat.get(k, dummy) for k in TRACE_PARAMS]
    _K.load().fwd[(cdiv(n, BLOCK),)](*tensors, *params, T, n, P, J, SAVE=io.get("H") is not None, BLOCK=BLOCK,
                                     **_flags(variant))  # fmt: skip


def trace_backward(
    variant: str, T: int, layout: tuple[int, int, int], flat: dict[str, Tensor], io: dict, accs: dict[str, Tensor]
) -> None:
    """:func:`.native.trace_backward` on CUDA tensors: ``accs`` (P-long) are added to (per-element partial sums,
    reduced with ``torch.sum``: deterministic)."""
    outer, P, J = layout
    n = io["gh0"].numel()
    dummy = io["H"].new_zeros(1)
    tensors = [dummy if io.get(k) is None else io[k] for k in TRACE_BWD_IO]
    params = [flat.get(k, dummy) for k in TRACE_PARAMS]
    acc = io["H"].new_empty(2, n)
    _K.load().bwd[(cdiv(n, BLOCK),)](*tensors, acc, *params, T, n, P, J,
                                     HAS_GHT=io.get("ghT") is not None, HAS_GNHT=io.get("gnhT") is not None,
                                     WANT_GX=io.get("gX") is not None, BLOCK=BLOCK, **_flags(variant))  # fmt: skip
    for i, k in enumerate(("a", "na")):
        if k in accs:
            accs[k] += acc[i].view(outer, P, J).sum((0, 2))
