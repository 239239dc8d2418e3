"""Recurrent layers (``SimpleRNN``, ``LSTM``, ``GRU``) on the ``tt.Layer`` machinery, torch-compatible weights."""

from .layers import GRU, LSTM, SimpleRNN

__all__ = ["GRU", "LSTM", "SimpleRNN"]
