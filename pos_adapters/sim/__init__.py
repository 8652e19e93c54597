"""The MICROS SIM/PMS-style protocol: codec, messages, TCP server."""
