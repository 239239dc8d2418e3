"""Sequence kernels. Each fast path has its plain reference beside it (``*_ref``); tests compare the two."""

from .linear_scan import linear_scan, linear_scan_ref

__all__ = ["linear_scan", "linear_scan_ref"]
