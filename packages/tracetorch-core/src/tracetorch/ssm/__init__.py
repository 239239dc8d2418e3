"""State-space layers (``S4D``, ``S6``, ``Mamba``) on the ``tt.Layer`` machinery, with fast ``scan`` paths."""

from .layers import S4D, S6, Mamba

__all__ = ["S4D", "S6", "Mamba"]
