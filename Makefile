# Wenzheng: the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
INFRA := deploy/local/infra.sh
SERVICES := deploy/local/services.sh
PYTEST_ARGS ?=

.PHONY: help venv run stop test test-unit infra-up infra-down infra-status lint schemas bench chaos monitor clean

help:
	@echo "make run           start Kafka, the MongoDB-wire server and every service locally"
	@echo "make stop          stop the services and the local infrastructure"
	@echo "make test          provision everything and run the whole test suite"
	@echo "make infra-up|infra-down|infra-status   the local Kafka broker and MongoDB-wire server"
	@echo "make lint          ruff"
	@echo "make schemas       regenerate the JSON Schemas in schemas/ from the event models"
	@echo "make bench         benchmarks (print figures, write var/bench/)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

infra-up: venv
	@$(INFRA) up

infra-down:
	@$(INFRA) down

infra-status:
	@$(INFRA) status

run: infra-up
	@$(SERVICES) start

stop:
	@-$(SERVICES) stop
	@$(INFRA) down

test: infra-up
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check services tests

schemas: venv
	$(PY) -m services.common.schemas

clean:
	rm -rf var/ .pytest_cache .ruff_cache
