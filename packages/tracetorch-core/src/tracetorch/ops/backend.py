"""Which kernels may run: one switch for the whole library, and one call that says what runs and why.

Backends (``TRACETORCH_BACKEND``, or :func:`set_backend` / :func:`use_backend` in code):

* ``"auto"`` (default): the fastest kernel that covers a call: native C on the CPU and Triton on CUDA for the
  firing types (B, T, TS with any of D, S, R) and the selective scan, the torch kernels (fused autograd nodes,
  no-grad streaming engines) elsewhere;
* ``"torch"``: the torch kernels only (no native C, no Triton): the same numbers as ``"auto"``, bit for bit on
  the CPU;
* ``"reference"``: every layer runs its reference step, and ``scan`` is the step loop: slow, for checking and
  debugging a fast path.

The older per-kernel switches ``TRACETORCH_NATIVE=0`` and ``TRACETORCH_TRITON=0`` still work: each turns off its
kernels under ``"auto"`` (with a ``DeprecationWarning``). :func:`explain` tells, for a layer and an input, which
kernel each way of running it uses.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

import torch

__all__ = ["BACKENDS", "allows", "backend", "explain", "set_backend", "use_backend"]

BACKENDS = ("auto", "torch", "reference")
_LEGACY = {"native": "TRACETORCH_NATIVE", "triton": "TRACETORCH_TRITON"}

_lock = threading.Lock()
_name: str | None = None  # None: not read from the environment yet
_disabled: frozenset[str] = frozenset()  # kernels turned off by the legacy switches
REFERENCE = False  # read on the hot paths as a module global: "reference" is the backend
GENERATION = 0  # bumped at every change of backend: caches that chose a kernel (streaming plans) key on it


def _check(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"tracetorch backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name  # type: ignore[return-value]


def _init(stacklevel: int = 3) -> None:
    """Read the environment once (``stacklevel``: how far up the caller whose line the deprecation warning shows)."""
    global _name, _disabled, REFERENCE
    with _lock:
        if _name is not None:
            return
        raw = os.environ.get("TRACETORCH_BACKEND", "auto").strip().lower() or "auto"
        try:
            name = _check(raw)
        except ValueError as exc:
            raise ValueError(f"TRACETORCH_BACKEND: {exc}") from None
        off = set()
        for kernel, var in _LEGACY.items():
            if os.environ.get(var, "1") == "0":
                off.add(kernel)
                msg = f"{var}=0 is deprecated: use TRACETORCH_BACKEND=torch"
                warnings.warn(msg, DeprecationWarning, stacklevel=stacklevel)
        _name, _disabled, REFERENCE = name, frozenset(off), name == "reference"


def backend() -> str:
    """The backend in force: ``"auto"``, ``"torch"`` or ``"reference"``."""
    if _name is None:
        return _first_read()
    return _name


@torch.compiler.assume_constant_result  # compiled code runs it while tracing: dynamo cannot trace the lock
def _first_read() -> str:
    _init(stacklevel=4)  # the warning points at backend()'s caller: _init <- _first_read <- backend <- caller
    return _name  # type: ignore[return-value]


def set_backend(name: str) -> None:
    """Choose the backend for this process (overrides ``TRACETORCH_BACKEND``)."""
    global _name, REFERENCE, GENERATION
    _check(name)
    _init()
    with _lock:
        _name, REFERENCE, GENERATION = name, name == "reference", GENERATION + 1


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with use_backend("torch"): ...`` runs the block under another backend and restores the previous one."""
    before = backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


def _reset_for_tests() -> None:
    """Read the environment again at the next use."""
    global _name, _disabled, REFERENCE, GENERATION
    with _lock:
        _name, _disabled, REFERENCE, GENERATION = None, frozenset(), False, GENERATION + 1


def allows(kernel: str) -> bool:
    """Whether a kernel family (``"native"``, ``"triton"``) may run under the backend in force."""
    return backend() == "auto" and kernel not in _disabled


def disabled_reason(kernel: str) -> str | None:
    """Why ``kernel`` may not run (``None`` when it may): the backend, or a legacy switch."""
    name = backend()
    if name != "auto":
        return f"backend {name!r}"
    if kernel in _disabled:
        return f"{_LEGACY[kernel]}=0"
    return None


def explain(layer, x) -> dict[str, str]:
    """Which kernel runs ``layer`` on the per-step input ``x`` (a tensor shaped like one step), and why, for each
    way of running it: ``{"scan": ..., "step": ..., "step (no grad)": ...}`` (``step``: with autograd on).

    >>> explain(tt.snn.LIB(8), torch.zeros(2, 8))["scan"]
    'native C kernel (tracetorch.ops.fire.native, variant b, float32)'
    """
    import torch

    from ..layer import Layer
    from ..rnn.layers import _Recurrent
    from ..snn.layers import SpikingLayer
    from ..ssm.layers import S4D, S6, Mamba

    if not isinstance(layer, Layer):
        raise TypeError(f"explain takes a tracetorch layer, got {type(layer).__name__}")
    if layer.reference_only:
        hooks = [h for h in layer.math_hooks if getattr(type(layer), h, None) is not None]
        why = f"reference step loop ({type(layer).__name__} overrides one of {', '.join(hooks)}: its own math runs)"
        return dict.fromkeys(("scan", "step", "step (no grad)"), why)
    if backend() == "reference":
        return dict.fromkeys(("scan", "step", "step (no grad)"), "reference step loop (backend 'reference')")
    out = {"step": "reference step (functional)"}
    if isinstance(layer, SpikingLayer):
        out["scan"], out["step (no grad)"] = _explain_spiking(layer, x)
    elif isinstance(layer, _Recurrent):
        op = {"SimpleRNN": "torch.rnn_tanh / rnn_relu", "LSTM": "torch.lstm", "GRU": "torch.gru"}
        out["scan"] = f"ATen fused sequence op ({op.get(type(layer).__name__, 'ATen')})"
        cell = "ATen fused cell (mid-stream [batch, features] inputs), else the reference step"
        out["step"] = out["step (no grad)"] = cell
    elif isinstance(layer, S4D):
        out["scan"] = "convolution form (FFT kernel and closed-form state terms)"
        out["step (no grad)"] = out["step"]
    elif isinstance(layer, (S6, Mamba)):
        from ..ops.selective_scan import triton as scan_triton

        cuda_ok = x.is_cuda and allows("triton") and scan_triton.usable(x)
        out["scan"] = (
            "selective scan, Triton kernel (tracetorch.ops.selective_scan.triton)"
            if cuda_ok
            else "selective scan, torch kernel (tracetorch.ops.selective_scan.torch_kernel)"
        )
        lean = isinstance(layer, Mamba) and x.ndim == 2 and layer.dim in (-1, 1) and x.is_floating_point()
        out["step (no grad)"] = "streaming engine (tracetorch.ssm.streaming.MambaStream)" if lean else out["step"]
    else:
        out["scan"] = "step loop (Layer.sequence)"
        out["step (no grad)"] = out["step"]
    if torch.is_floating_point(x) and x.dtype in (torch.float16, torch.bfloat16):
        out["step (no grad)"] = "reference step (a float16/bfloat16 input is upcast on the general path)"
    return {k: out[k] for k in ("scan", "step", "step (no grad)")}


def _explain_spiking(layer, x) -> tuple[str, str]:
    from ..functional.spike import SpikeFunction
    from .fire import FireConfig, why_not_flat
    from .fire.flat import variant_of
    from .trace import why_not_native
    from .trace.native import trace_variant

    spec, spike_fn = layer.spec, layer.spike_fn
    if not spec.fires:
        why = why_not_native(x.unsqueeze(0), [], spec.dual, spec.ema)  # the trace op's own chooser
        trace = (
            f"native C trace kernel (tracetorch.ops.trace.native, variant {trace_variant(spec.dual, spec.ema)}, "
            f"{str(x.dtype)[6:]})"
            if why is None
            else f"linear scans (tracetorch.ops.trace, torch path): {why}"
        )
        return trace, "streaming engine (tracetorch.snn.streaming), torch ops"
    if not isinstance(spike_fn, SpikeFunction):
        return "reference step loop (a custom spike callable)", "reference step (a custom spike callable)"
    cfg = FireConfig(spec, spike_fn.mode, spike_fn.surrogate, spike_fn.slope, layer.detach_reset)
    why = why_not_flat(cfg, x.unsqueeze(0))  # the chooser's own reasons (ops.fire.choose_kernels)
    stream = "streaming engine (tracetorch.snn.streaming), torch ops"
    if why is not None:
        return f"torch kernel (tracetorch.ops.fire.torch_kernel): {why}", stream
    if x.device.type != "cpu":
        return "Triton kernel (tracetorch.ops.fire.triton)", stream
    scan = f"native C kernel (tracetorch.ops.fire.native, variant {variant_of(spec)}, {str(x.dtype)[6:]})"
    if spec.synaptic:
        scan += "; the synaptic stage: tracetorch.ops.trace"
        return scan, "streaming engine (tracetorch.snn.streaming): synaptic stage in torch, then the native step kernel"
    return scan, "native streaming step (tracetorch.ops.fire.native)"
