"""The lazy loading shared by the Triton kernel modules (:mod:`.fire.triton`, :mod:`.selective_scan.triton`)."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyKernels:
    """A module of Triton kernels (``tracetorch.ops.<name>``, e.g. ``fire.triton_kernels``; it imports triton),
    imported on first use.

    ``status`` is ``"available"`` or why not: no Triton (CPU-only torch builds), or a
    launch that failed (:meth:`disable`); the callers then run their torch implementations."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kernels: ModuleType | None = None
        self.status: str | None = None

    def load(self) -> ModuleType | None:
        if self.status is None:
            try:
                self.kernels = importlib.import_module(f"{__package__}.{self.name}")
                self.status = "available"
            except Exception as exc:  # no triton: the torch implementation runs
                self.status = f"unavailable: {type(exc).__name__}: {exc}"
        return self.kernels

    def status_line(self) -> str:
        """``"available"`` or why not: the backend forbids Triton, it cannot be imported, or a launch failed."""
        from . import backend

        reason = backend.disabled_reason("triton")
        if reason is not None:
            return f"disabled by {reason}"
        self.load()
        return self.status or "unknown"

    def usable(self, u) -> bool:
        """Whether these kernels can take ``u``: a CUDA float32/float64 tensor, with Triton importable."""
        import torch

        return u.is_cuda and u.dtype in (torch.float32, torch.float64) and self.load() is not None

    def disable(self, reason: str) -> None:
        """Stop using the kernels for the rest of the process (a launch failed)."""
        self.kernels, self.status = None, f"disabled after an error: {reason}"


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
