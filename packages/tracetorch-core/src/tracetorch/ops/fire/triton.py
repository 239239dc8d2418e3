"""Triton kernels for the single-branch firing types on CUDA: the GPU twin of ``native_fire.inc``.

On the GPU the torch kernels of :mod:`.torch_kernel` launch a dozen small kernels per time step, so a
sequence of a few hundred steps is bound by launch latency, not by the GPU. These kernels run the whole
sequence in one launch per direction: each program owns a block of neurons and loops over time with the
membrane (and, backward, the adjoints and parameter-gradient partial sums) in registers, like the C kernels.
Same variants (B, T, TS, each with or without R; S runs before them; Heaviside spikes with any of the four
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
from .native import ACC_SLOTS, PARAM_SLOTS, SURROGATE_KIND

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


def _flags(variant: str) -> dict:
    return {"TERN": variant.startswith("t"), "TS": variant.startswith("ts"), "REC": variant.endswith("r")}


def fire_forward(
    variant: str, T: int, layout: tuple[int, int, int], params: dict[str, Tensor], u: Tensor, mem0: Tensor,
    rec0: Tensor | None, Y: Tensor, M: Tensor | None, R: Tensor | None, memT: Tensor, recT: Tensor | None,
) -> None:  # fmt: skip
    """:func:`.native.fire_forward` on CUDA tensors (contiguous, one dtype)."""
    _, P, J = layout
    n = mem0.numel()
    f = _flags(variant)
    save = M is not None
    dummy = u.new_zeros(1)
    pick = lambda t: dummy if t is None else t  # noqa: E731
    grid = (cdiv(n, BLOCK),)
    _K.load().fwd[grid](u, mem0, pick(rec0), Y, pick(M), pick(R), memT, pick(recT), *_params(params, dummy), T, n,
                        P, J, SAVE=save, BLOCK=BLOCK, **f)  # fmt: skip


def fire_backward(
    variant: str, layout: tuple[int, int, int], params: dict[str, Tensor], slope: float, surrogate: str,
    detach_reset: bool, gY: Tensor, M: Tensor, R: Tensor | None, mem0: Tensor, rec0: Tensor | None,
    gmemT: Tensor | None, grecT: Tensor | None, gU: Tensor | None, gmem0: Tensor, grec0: Tensor | None,
    accs: dict[str, Tensor],
) -> None:  # fmt: skip
    """:func:`.native.fire_backward` on CUDA tensors: ``accs`` (P-long, by ``ACC_SLOTS`` name)
    are added to."""
    outer, P, J = layout
    T = M.shape[0]
    n = mem0.numel()
    wanted = [k for k in ACC_SLOTS if k in accs]
    slot = {k: wanted.index(k) if k in accs else -1 for k in ACC_SLOTS}
    acc = M.new_empty(max(len(wanted), 1), n)
    dummy = M.new_zeros(1)
    pick = lambda t: dummy if t is None else t  # noqa: E731
    grid = (cdiv(n, BLOCK),)
    _K.load().bwd[grid](gY, M, pick(R), mem0, pick(rec0), pick(gmemT), pick(grecT), pick(gU), gmem0, pick(grec0), acc,
              *_params(params, dummy), T, n, P, J, _consts(float(slope), bool(detach_reset), M),
              KIND=SURROGATE_KIND[surrogate], HAS_GMEM=gmemT is not None, HAS_GREC=grecT is not None,
              WANT_GU=gU is not None, **{f"A_{k.upper()}": v for k, v in slot.items()}, BLOCK=BLOCK,
              **_flags(variant))  # fmt: skip
    for k in wanted:
        accs[k] += acc[slot[k]].view(outer, P, J).sum((0, 2))
