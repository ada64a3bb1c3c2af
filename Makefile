# PledgeWatch — `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps demo test test-unit test-integration lint bench clean

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's mosquitto runs the project's broker config in the tests and the ingest benchmark.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing mosquitto (Debian)"; \
	    (apt-get install -y -qq mosquitto mosquitto-clients >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null)); \
	  else echo "note: install Debian's mosquitto (sudo apt-get install mosquitto) for the broker tests"; fi; }

# ARGS passes options through, e.g. make demo ARGS="--scenario theft --devices 12"
demo: install
	$(BIN)/pledgewatch demo $(ARGS)

test: install
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/pledgewatch bench ingest --messages 100000
	$(BIN)/pledgewatch bench revalue --lots 1000000
	$(BIN)/pledgewatch bench alert-latency

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
