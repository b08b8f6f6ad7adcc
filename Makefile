# The two commands of the README:
#   make demo   simulated devices -> gateway -> broker, status page at a printed URL
#   make test   the whole test suite (lint, types, tests), as CI runs it
# Each does its own set-up: a virtual environment in .venv, and as root on Debian /
# Raspberry Pi OS, mosquitto (and for the tests Chromium) through apt when absent.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup system-packages lint bench clean

demo: setup
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || $(MAKE) --no-print-directory system-packages PACKAGES="mosquitto" || true
	$(BIN)/bedside-gateway demo $(DEMO_ARGS)

test: setup
	@$(MAKE) --no-print-directory system-packages PACKAGES="mosquitto chromium"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

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

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
