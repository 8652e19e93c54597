# One entry point for people and CI. Every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup demo run test lint unit bench clean

help:
	@echo "make demo   - set up, then show registers talking to a gateway with sample data"
	@echo "make test   - set up, then lint (ruff, mypy --strict) and run every test"
	@echo "make bench  - benchmarks (figures go to docs/performance.md)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	bash demo/run-demo.sh

run: setup
	$(BIN)/edge-gateway run

lint: setup
	$(BIN)/ruff check gateway pos_adapters sync tests bench
	$(BIN)/ruff format --check gateway pos_adapters sync tests bench
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint unit

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
