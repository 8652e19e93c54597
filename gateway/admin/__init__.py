"""The local admin HTTP API: health, readiness, status and Prometheus metrics."""
