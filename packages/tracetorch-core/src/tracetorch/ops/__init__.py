"""Sequence ops, one folder each: the reference, the torch kernel and the native/Triton kernels of an op side by
side, and the one function that picks among them (``fire/``: the firing neurons, ``linear_scan/``: first-order
linear recurrences, ``selective_scan/``: Mamba's S6). Tests compare every kernel with its reference (``*_ref``)."""

from .fire import fire_sequence, fire_sequence_ref
from .linear_scan import linear_scan, linear_scan_ref
from .selective_scan import selective_scan, selective_scan_ref
from .workspace import clear_workspace, workspace_bytes

__all__ = [
    "clear_workspace",
    "fire_sequence",
    "fire_sequence_ref",
    "linear_scan",
    "linear_scan_ref",
    "selective_scan",
    "selective_scan_ref",
    "workspace_bytes",
]
