"""Spiking layers. The full set of 32 types (LI/B/T/TS x D/S/R/EMA) is built on the same ``tt.Layer``."""

from .li import LI
from .lib import LIB

__all__ = ["LI", "LIB"]
