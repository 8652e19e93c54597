"""Loyalty edge gateway: the per-store daemon beside the POS server."""

__version__ = "0.1.0"
