"""Sequence kernels. Each fast path has its plain reference beside it (``*_ref``); tests compare the two."""

from .linear_scan import linear_scan, linear_scan_ref
from .selective_scan import selective_scan, selective_scan_ref
from .workspace import clear_workspace, workspace_bytes

__all__ = [
    "clear_workspace",
    "linear_scan",
    "linear_scan_ref",
    "selective_scan",
    "selective_scan_ref",
    "workspace_bytes",
]
