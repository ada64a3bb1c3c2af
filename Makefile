# PledgeWatch — `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The dashboard's browser libraries (Chart.js, Leaflet) from the npm registry, reinstalled only
# when its package-lock.json changes; the app serves their dist folders, nothing else.
DASHBOARD := api/dashboard
NPM_STAMP := $(DASHBOARD)/node_modules/.installed

.PHONY: sdk-schema install system-deps demo test test-unit test-integration test-e2e lint bench clean

install: $(STAMP) system-deps $(NPM_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(NPM_STAMP): $(DASHBOARD)/package-lock.json $(DASHBOARD)/package.json | system-deps
	@command -v npm >/dev/null 2>&1 || { \
	  echo "error: npm is missing (sudo apt-get install npm): the dashboard needs it"; exit 1; }
	npm ci --prefix $(DASHBOARD) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# apt_install(command, packages, why): Debian packages, installed when the command is missing and
# this runs as root with apt-get; otherwise a note saying what to install.
define apt_install
	@command -v $(1) >/dev/null 2>&1 || test -x /usr/sbin/$(1) || test -x /usr/bin/$(1) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(2) (Debian)"; \
	    (apt-get install -y -qq $(2) >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq $(2) >/dev/null)); \
	  else echo "note: install Debian's $(2) (sudo apt-get install $(2)) $(3)"; fi; }
endef

# mosquitto runs the project's broker config in the tests and the ingest benchmark; chromium the
# dashboard's browser test (Playwright drives this one; it never downloads a browser); wrk the API
# benchmark; npm installs the dashboard's libraries; promtool (Debian's prometheus package, which
# on a machine with systemd also starts a server: `systemctl disable --now prometheus` if unwanted)
# checks and unit-tests the alert rules; gcc builds the migrate fallback test's stand-in loader.
system-deps:
	$(call apt_install,mosquitto,mosquitto mosquitto-clients,for the broker tests)
	$(call apt_install,chromium,chromium,for the dashboard browser test)
	$(call apt_install,wrk,wrk,for the API benchmark)
	$(call apt_install,npm,npm,for the dashboard libraries)
	$(call apt_install,promtool,prometheus,for the alert rule tests)
	$(call apt_install,gcc,gcc,for the migrate fallback test)

# ARGS passes options through, e.g. make demo ARGS="--scenario theft --devices 12"
demo: install
	$(BIN)/pledgewatch demo $(ARGS)

# Each run gets a private --basetemp (tests/conftest.py), so two runs can share the machine.
# The suite runs on TEST_WORKERS pytest-xdist workers: most tests wait on a broker, a database or
# a process, so 3 workers on 2 cores take the whole suite from 28 min to about 10 (worksteal
# rebalances the long tests at the end). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test: install
	$(PYTEST)

test-unit: install
	$(PYTEST) tests/unit

test-integration: install
	$(PYTEST) tests/integration

test-e2e: install
	$(PYTEST) tests/e2e

# ruff (style and defects), mypy (strict on product code, checked tests) and import-linter (the
# layers and contracts in pyproject.toml: a wrong-way import fails here).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/pledgewatch bench ingest --messages 100000
	$(BIN)/pledgewatch bench revalue --lots 1000000
	$(BIN)/pledgewatch bench alert-latency
	$(BIN)/pledgewatch bench api --repeat 3
	$(BIN)/pledgewatch bench detection
	$(BIN)/pledgewatch bench chaos
	$(BIN)/pledgewatch bench engine --facilities 1000 --lots-per-facility 5

# After an API change: update sdk/pledgewatch_sdk, then refresh the schema copy the SDK test checks.
sdk-schema: install
	$(BIN)/python -m tests.unit.test_sdk_schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache \
	  $(DASHBOARD)/node_modules build dist *.egg-info
