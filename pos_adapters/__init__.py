"""Transports that turn register wire messages into service calls and back."""
