# One entry point for people and CI. Every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup system-deps demo run test lint unit bench deb clean

help:
	@echo "make demo   - set up, then show registers talking to a gateway with sample data"
	@echo "make test   - set up, then lint (ruff, mypy --strict) and run every test"
	@echo "make bench  - benchmarks (figures go to docs/performance.md)"

setup: $(STAMP)

# The tests start a real Mosquitto broker, real serial lines through socat pseudo-terminals, and
# the dashboard in Debian's Chromium (driven by playwright; playwright never downloads a browser).
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto || ! command -v socat >/dev/null 2>&1 \
		|| ! test -x /usr/bin/chromium; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq mosquitto socat chromium; \
	fi

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
	$(BIN)/ruff check gateway pos_adapters sync isl_plugin tests bench
	$(BIN)/ruff format --check gateway pos_adapters sync isl_plugin tests bench
	$(BIN)/mypy

unit: setup system-deps
	$(BIN)/pytest

test: lint unit

deb:
	bash packaging/debian/build-deb.sh dist

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
