"""The firing op: the membrane and spikes of the firing neuron types (B, T, TS; any of D, R) over a whole drive
sequence ``u`` ``[T, ...]``, one autograd node (the synaptic stage and the LI types are linear scans, see
:mod:`tracetorch.snn.sequence`). Everything about it is in this folder:

* ``reference.py``: :func:`fire_sequence_ref`, the step loop over ``functional.neuron_step`` (the definition every
  kernel is tested against);
* ``torch_kernel.py``: the torch kernel, a no-grad forward loop into preallocated buffers and a hand-written
  backward (any type, any spike function);
* ``flat.py``: the glue of the two flat kernels below (parameter packs, autograd);
* ``native.py``, ``native_lif.c``, ``native_fire.inc``: C kernels for the CPU, built on first use and cached;
  ``custom_ops.py`` registers them as ``torch.library`` ops, which compiled graphs use (``tracetorch::fire_native``);
* ``triton.py``, ``triton_kernels.py``: Triton kernels for CUDA.

:func:`choose_kernels` is the one place that picks among them, within what the backend allows
(:mod:`tracetorch.ops.backend`: ``TRACETORCH_BACKEND``); all give the reference's outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...functional.spike import SpikeFunction
from ...functional.spiking import NeuronSpec
from .. import backend
from . import native, triton
from .custom_ops import fire_native_compiled
from .flat import variant_of
from .records import FireParams, FireStates
from .reference import fire_sequence_ref
from .torch_kernel import FireConfig, FiringCore

__all__ = [
    "FireConfig",
    "FireParams",
    "FireStates",
    "choose_kernels",
    "compiles_natively",
    "fire_sequence",
    "fire_sequence_ref",
    "native_ok",
    "why_not_flat",
]


NATIVE_DTYPES = (torch.float32, torch.float64)


def why_not_flat(cfg: FireConfig, u: Tensor) -> str | None:
    """Why the flat kernels (native C on the CPU, Triton on CUDA) do not take this call, or ``None`` when they do:
    they cover the firing types (B, T or TS, with or without D and R) with Heaviside spikes, where the backend
    allows them (:mod:`tracetorch.ops.backend`), in float32/64, once built or importable."""
    if cfg.mode != "heaviside":
        return f"spike mode {cfg.mode!r} (the flat kernels do Heaviside spikes)"
    cpu = u.device.type == "cpu"
    reason = backend.disabled_reason("native" if cpu else "triton")
    if reason is not None:
        return f"{reason} forbids the flat kernels"
    if not cpu:
        return None if triton.usable(u) else f"Triton does not take it ({triton.triton_status()})"
    if u.dtype not in NATIVE_DTYPES:
        return f"{str(u.dtype).removeprefix('torch.')} (the native kernels take float32 and float64)"
    if not native.has_variant(variant_of(cfg.spec), u.dtype):
        return f"no native kernel of variant {variant_of(cfg.spec)} here (native kernels: {native.native_status()})"
    return None


def native_ok(cfg: FireConfig, u: Tensor) -> bool:
    """Whether the native kernels take this call (:func:`why_not_flat`, on the CPU)."""
    return u.device.type == "cpu" and why_not_flat(cfg, u) is None


def choose_kernels(cfg: FireConfig, u: Tensor):
    """The flat kernels that take this call, :mod:`.native` on the CPU or :mod:`.triton` on CUDA, or ``None``: then
    the torch kernel runs (:func:`why_not_flat` says why)."""
    if why_not_flat(cfg, u) is not None:
        return None
    return native if u.device.type == "cpu" else triton


def compiles_natively(spec: NeuronSpec, u: Tensor, spike_fn: SpikeFunction, detach_reset: bool) -> bool:
    """Whether a compiled graph runs this call on the native kernels (their custom op, ``tracetorch::fire_native``);
    otherwise a compiled ``scan`` traces the layer's step loop (the torch kernel's buffer pool does not trace)."""
    cfg = FireConfig(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, bool(detach_reset))
    return choose_kernels(cfg, u) is native


def fire_sequence(
    spec: NeuronSpec,
    u: Tensor,
    state: dict[str, Tensor],
    p: dict[str, Tensor],
    spike_fn: SpikeFunction,
    detach_reset: bool,
    new: dict[str, Tensor],
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run the firing core of a type over its drive ``u`` ``[T, ...]`` (the synaptic stage, if any, already
    applied); fills ``new`` with the final membrane and recurrent states and returns ``(y, new)``."""
    grad = torch.is_grad_enabled()
    cfg = FireConfig(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, bool(detach_reset), grad)
    cfg = cfg._replace(kernels=choose_kernels(cfg, u))
    if torch.compiler.is_compiling():  # dynamo traces neither ctypes calls nor FiringCore's buffer pool
        if cfg.kernels is not native:
            raise RuntimeError("fire_sequence: compiled calls take the native kernels only (see compiles_natively)")
        return fire_native_compiled(spec, u, state, p, spike_fn, detach_reset, new)
    dn = None
    if spec.dual and cfg.kernels is None:  # the flat kernels split the drive by sign themselves
        u, dn = u.clamp(min=0), u.clamp(max=0)

    y, *finals = FiringCore.apply(cfg, u, dn, *FireStates.of(spec, state), *FireParams.of(spec, p))
    names = [k for k in FireStates.names(spec) if k is not None]  # the finals come in this order
    new.update(zip(names, finals, strict=True))
    return y, new
