"""Triton kernels for the firing types on CUDA: the GPU twin of ``native_fire.inc``.

On the GPU the torch kernels of :mod:`.torch_kernel` launch a dozen small kernels per time step, so a
sequence of a few hundred steps is bound by launch latency, not by the GPU. These kernels run the whole
sequence in one launch per direction: each program owns a block of neurons and loops over time with the
membrane (and, backward, the adjoints and parameter-gradient partial sums) in registers, like the C kernels.
Same variants (B, T, TS, each with or without D and R; S runs before them; Heaviside spikes with any of the four
surrogate shapes), same arguments (:func:`fire_forward`, :func:`fire_backward` mirror
:mod:`.native`), same saved tensors (pre-reset membranes, recurrent traces) and the same
operations per element; the forward uses fused multiply-adds where torch's ``addcmul`` does.

Optional: Triton ships with PyTorch's CUDA builds; without it (or with ``TRACETORCH_BACKEND=torch``) the torch kernels
run. :func:`triton_status` says which. Parameter gradients are summed per element in the kernel and reduced
over the batch-like axes with ``torch.sum`` (deterministic; no atomics).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._triton import LazyKernels, cdiv
from .native import ACC_SLOTS, BWD_IO, FWD_IO, PARAM_SLOTS, SURROGATE_KIND, variant_flags

__all__ = ["fire_backward", "fire_forward", "triton_available", "triton_status"]

_K = LazyKernels("fire.triton_kernels")
BLOCK = 256


def triton_available() -> bool:
    return _K.load() is not None


triton_status = _K.status_line  # "available" or why not (after a failing launch, why: the torch kernels then run)
usable = _K.usable
disable = _K.disable


def _params(params: dict[str, Tensor], dummy: Tensor) -> list[Tensor]:
    return [params.get(k, dummy) for k in PARAM_SLOTS]


_CONSTS: dict[tuple, Tensor] = {}


def _consts(slope: float, detach_reset: bool, like: Tensor) -> Tensor:
    """``[slope, 1 (0 if detach_reset)]`` on the device, in the tensors' dtype (a kernel's float arguments are
    float32): cached, since a fresh host-to-device copy each call would make the host wait for the GPU."""
    key = (slope, detach_reset, like.dtype, like.device)
    t = _CONSTS.get(key)
    if t is None:
        t = _CONSTS[key] = torch.tensor([slope, 0.0 if detach_reset else 1.0], dtype=like.dtype, device=like.device)
    return t


def fire_forward(variant: str, T: int, layout: tuple[int, int, int], params: dict[str, Tensor], io: dict) -> None:
    """:func:`.native.fire_forward` on CUDA tensors (contiguous, one dtype; ``io`` by :data:`.native.FWD_IO` name)."""
    _, P, J = layout
    u = io["u"]
    n = io["mem0"].numel()
    dummy = u.new_zeros(1)
    tensors = [dummy if io.get(k) is None else io[k] for k in FWD_IO]
    grid = (cdiv(n, BLOCK),)
    _K.load().fwd[grid](*tensors, *_params(params, dummy), T, n, P, J, SAVE=io.get("M") is not None, BLOCK=BLOCK,
                        **variant_flags(variant))  # fmt: skip


def fire_backward(
    variant: str, layout: tuple[int, int, int], params: dict[str, Tensor], slope: float, surrogate: str,
    detach_reset: bool, io: dict, accs: dict[str, Tensor],
) -> None:  # fmt: skip
    """:func:`.native.fire_backward` on CUDA tensors (``io`` by :data:`.native.BWD_IO` name): ``accs`` (P-long, by
    ``ACC_SLOTS`` name) are added to."""
    outer, P, J = layout
    M = io["M"]
    T = M.shape[0]
    n = io["mem0"].numel()
    io = dict(io)
    for a, b, second in (("gmemT", "gnmemT", "nmem0"), ("grecT", "gnrecT", "nrec0")):
        # the kernel reads the final-state gradients of a D pair together: the missing one of a pair is zero
        if io.get(second) is not None and (io.get(a) is None) != (io.get(b) is None):
            given = io[a] if io.get(a) is not None else io[b]
            io[a if io.get(a) is None else b] = torch.zeros_like(given)
    wanted = [k for k in ACC_SLOTS if k in accs]
    slot = {k: wanted.index(k) if k in accs else -1 for k in ACC_SLOTS}
    acc = M.new_empty(max(len(wanted), 1), n)
    dummy = M.new_zeros(1)
    tensors = [dummy if io.get(k) is None else io[k] for k in BWD_IO]
    has_g = {"HAS_GMEM": io.get("gmemT") is not None or io.get("gnmemT") is not None,
             "HAS_GREC": io.get("grecT") is not None or io.get("gnrecT") is not None}  # fmt: skip
    grid = (cdiv(n, BLOCK),)
    _K.load().bwd[grid](*tensors, acc, *_params(params, dummy), T, n, P, J,
              _consts(float(slope), bool(detach_reset), M), KIND=SURROGATE_KIND[surrogate], **has_g,
              WANT_GU=io.get("gU") is not None, **{f"A_{k.upper()}": v for k, v in slot.items()}, BLOCK=BLOCK,
              **variant_flags(variant))  # fmt: skip
    for k in wanted:
        accs[k] += acc[slot[k]].view(outer, P, J).sum((0, 2))
