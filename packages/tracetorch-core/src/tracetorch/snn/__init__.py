"""Spiking layers: the 32 types of the original traceTorch (LI/B/T/TS x D/S/R/EMA) from one mechanism.

``LI`` leaky integrator, ``LIB`` leaky integrate-and-fire (binary), ``LIT`` ternary, ``LITS`` ternary with
scales; prefixes ``D`` dual, ``S`` synaptic, ``R`` recurrent; ``EMA`` membrane for the LI family.
See :mod:`tracetorch.functional` (``functional/spiking.py``) for the equations.
"""

from ..functional.spiking import NAMES
from .layers import *  # noqa: F403 - the 32 names, listed in NAMES
from .layers import SpikingLayer

__all__ = ["SpikingLayer", *NAMES]
