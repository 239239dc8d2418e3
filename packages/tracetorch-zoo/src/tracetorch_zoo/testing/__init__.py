"""Test helpers for tracetorch_zoo (stdlib only; safe to import without torch)."""

from .hub_server import LocalHub

__all__ = ["LocalHub"]
