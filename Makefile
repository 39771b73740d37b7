# Wenzheng: the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NPM_STAMP := node_modules/.installed-stamp
# Debian's Chromium drives the portal's browser tests (Playwright cannot download its own browser here)
export WENZHENG_CHROMIUM ?= /usr/bin/chromium
INFRA := deploy/local/infra.sh
SERVICES := deploy/local/services.sh
PYTEST_ARGS ?=
# where the local infrastructure listens (deploy/local/infra.sh reads the same variables)
export WENZHENG_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(or $(WENZHENG_KAFKA_PORT),9092)
export WENZHENG_MONGO_URL ?= mongodb://127.0.0.1:$(or $(WENZHENG_MONGO_PORT),27017)/

.PHONY: help venv npm browser run stop test test-unit infra-up infra-down infra-status lint schemas bench chaos monitor ops-check clean

help:
	@echo "make run           start Kafka, the MongoDB-wire server and every service locally"
	@echo "make stop          stop the services and the local infrastructure"
	@echo "make test          provision everything and run the whole test suite"
	@echo "make infra-up|infra-down|infra-status   the local Kafka broker and MongoDB-wire server"
	@echo "make lint          ruff"
	@echo "make schemas       regenerate the JSON Schemas in schemas/ from the event models"
	@echo "make bench         benchmarks (print figures, write var/bench/)"
	@echo "make chaos         kill parts of the platform under load, check nothing is lost (var/chaos/)"
	@echo "make monitor       a local Prometheus scraping the services of make run, on :9090"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the portal's build and browser tests need, installed with apt-get only when missing (a no-op
# when they are there; as root on a fresh Debian machine, or through sudo)
APT_INSTALL = SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q

# the portal's front-end packages (htmx, ECharts, the Ganzhou map, axe-core), pinned by package-lock.json,
# into the git-ignored node_modules/; the portal serves them under /static/vendor/
$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "[npm] installing npm"; $(APT_INSTALL) npm; }
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $(NPM_STAMP)

npm: $(NPM_STAMP)

# Debian's Chromium and the CJK fonts (without them Chinese renders as boxes) for the browser tests
browser:
	@missing=""; \
	  [ -x "$(WENZHENG_CHROMIUM)" ] || missing="$$missing chromium"; \
	  dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	  if [ -n "$$missing" ]; then echo "[browser] installing:$$missing"; $(APT_INSTALL) $$missing; fi

infra-up: venv
	@$(INFRA) up

infra-down:
	@$(INFRA) down

infra-status:
	@$(INFRA) status

run: infra-up npm
	@$(SERVICES) start

stop:
	@-$(SERVICES) stop
	@$(INFRA) down

test: infra-up npm browser
	@scripts/ops/monitor.sh install
	@$(PY) -m harness.topics
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

bench: infra-up npm
	$(PY) -m bench.platform_load
	@for b in bench/intake_*.py bench/stats_*.py bench/notifier_*.py bench/router_*.py bench/portal_*.py; do \
	  [ -f "$$b" ] || continue; m=$$(basename $$b .py); echo "== bench.$$m"; $(PY) -m bench.$$m || exit 1; done

chaos: infra-up
	$(PY) -m bench.chaos
	WENZHENG_FUZZ_EXAMPLES=100 $(PY) -m pytest -q -p no:cacheprovider tests/intake/integration/test_api_fuzz.py tests/stats/integration/test_api_fuzz.py

lint: venv
	$(VENV)/bin/ruff check services tests scripts bench

schemas: venv
	$(PY) -m services.common.schemas
	$(PY) -m services.common.asyncapi

monitor: venv  ## a local Prometheus (rules included) scraping `make run`'s services on :9090
	@scripts/ops/monitor.sh run

ops-check: venv  ## promtool checks, and generated contracts/dashboards up to date
	@scripts/ops/monitor.sh check
	$(PY) -m services.common.asyncapi --check
	$(PY) -m scripts.ops.dashboards --check
	$(PY) -m scripts.ops.contract_compat

clean:
	rm -rf var/ .pytest_cache .ruff_cache
