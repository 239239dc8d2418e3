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

    def disable(self, reason: str) -> None:
        """Stop using the kernels for the rest of the process (a launch failed)."""
        self.kernels, self.status = None, f"disabled after an error: {reason}"


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
