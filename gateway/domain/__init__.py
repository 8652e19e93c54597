"""Pydantic models of the store's loyalty world; no I/O."""
