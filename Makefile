# One entry point for people and CI. Every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup system-deps demo run test lint unit bench deb deb-lock clean

help:
	@echo "make demo   - set up, then show registers talking to a gateway with sample data"
	@echo "make test   - set up, then lint (ruff, mypy --strict) and run every test"
	@echo "make bench  - benchmarks (figures go to docs/performance.md)"
	@echo "make deb    - the Debian package in dist/, checked by lintian"

setup: $(STAMP)

# The tests start a real Mosquitto broker, real serial lines through socat pseudo-terminals, and
# the dashboard in Debian's Chromium (driven by playwright; playwright never downloads a browser).
# The package's tests build it (dpkg-dev, python3-venv), check it with lintian, install it into a
# throwaway root (adduser), and rate the unit with systemd-analyze (systemd).
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto || ! command -v socat >/dev/null 2>&1 \
		|| ! test -x /usr/bin/chromium || ! command -v lintian >/dev/null 2>&1 \
		|| ! command -v dpkg-shlibdeps >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1 \
		|| ! test -x /usr/sbin/adduser || ! /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 \
		|| ! command -v promtool >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq mosquitto socat chromium \
			lintian dpkg-dev binutils python3-venv adduser systemd man-db prometheus postgresql; \
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
	$(BIN)/ruff check gateway pos_adapters sync isl_plugin tests bench docs/examples
	$(BIN)/ruff format --check gateway pos_adapters sync isl_plugin tests bench docs/examples
	$(BIN)/mypy
	$(BIN)/mypy --platform win32  # MICROS RES servers run Windows: POSIX-only calls stay guarded

unit: setup system-deps
	$(BIN)/pytest

test: lint unit

# The Debian package in dist/, checked by lintian (any tag not overridden fails the build).
deb: system-deps
	bash packaging/debian/build-deb.sh dist

# After a change to pyproject.toml's dependencies: pin them again, with hashes, for the package.
deb-lock:
	bash packaging/debian/update-lock.sh

# Every benchmark with a DESIGN.md section 7 target, then one summary table (PASS/MISS against
# floors measured in the same run). `make bench BENCH_ARGS=--quick` for small sizes; other
# options: `--json FILE`, `--count-fsyncs`, `--only NAME,...` (bench/README.md).
bench: setup
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
