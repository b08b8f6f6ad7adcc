# The two commands of the README:
#   make demo   simulated devices -> gateway -> broker, status page at a printed URL
#   make test   the whole test suite (lint, types, tests), as CI runs it
# Each does its own set-up: a virtual environment in .venv (for the tests also the AsyncAPI
# CLI in node_modules, from the npm registry), and as root on Debian /
# Raspberry Pi OS, what is missing through apt: mosquitto for both; for the tests also
# Chromium and a Chinese font (the browser tests lay the page out and take its
# screenshots as a phone shows it), dbus-daemon, systemd (systemd-analyze checks the
# unit), the headers dbus-python builds against, and PostgreSQL's server binaries (the
# township tests start a private server of their own, never the system's).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint system-packages bench soak fleet clean

demo: $(VENV)/.installed-run
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || $(MAKE) --no-print-directory system-packages PACKAGES="mosquitto" || true
	$(BIN)/bedside-gateway demo $(DEMO_ARGS)

test: $(VENV)/.installed-test node_modules/.installed
	@$(MAKE) --no-print-directory system-packages PACKAGES="mosquitto chromium fonts-noto-cjk dbus-daemon systemd postgresql"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

soak: $(VENV)/.installed-test
	$(BIN)/python -m bench soak

fleet: $(VENV)/.installed-test
	$(BIN)/python -m bench.fleet $(FLEET_ARGS)

$(VENV)/.created:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed-run: pyproject.toml $(VENV)/.created
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.created
	@# dbus-python (the BlueZ tests) builds from source against libdbus and GLib.
	@$(MAKE) --no-print-directory system-packages PACKAGES="build-essential pkg-config libdbus-1-dev libglib2.0-dev"
	$(BIN)/pip install --quiet -e '.[dev,township]'
	touch $@ $(VENV)/.installed-run

# The AsyncAPI CLI that tests/test_asyncapi_cli.py validates docs/asyncapi.yaml with, at the
# version package-lock.json pins (npm from Debian's nodejs when it is missing). Install
# scripts are not run: validating needs none (they set up shell completion, report
# telemetry, delete browser bundles).
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || $(MAKE) --no-print-directory system-packages PACKAGES="nodejs npm"
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Installs the Debian packages in PACKAGES that are missing (needs root and apt-get).
system-packages:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run: sudo apt-get install -y$$missing)"; exit 1; fi; \
	fi

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
