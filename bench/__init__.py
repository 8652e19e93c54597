"""Benchmarks for DESIGN.md section 7: each prints its figures next to a floor measured in the same
run, and the ratio between them. Run `python -m bench.run_all --quick` for a one-minute pass."""
