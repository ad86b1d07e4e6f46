# stepledger: set-up, local stack, tests. Every target is safe to run again.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STEPLEDGER := $(VENV)/bin/stepledger
PYTEST_FLAGS ?= -q -ra

.PHONY: help bootstrap bootstrap-test demo up down status migrate schema test bench lint

help:
	@echo "make demo     set up, start the local stack, load the BotImage demo data"
	@echo "make up       start the local stack (PostgreSQL, PostgREST, nginx) and migrate"
	@echo "make down     stop the local stack"
	@echo "make status   show the local stack"
	@echo "make migrate  apply bootstrap, migrations, functions and policies"
	@echo "make schema   rewrite db/schema.snapshot (the reviewed schema snapshot; needs the stack up)"
	@echo "make test     install test dependencies and run the whole suite"
	@echo "make bench    run the benchmarks and print the ratios"
	@echo "make lint     ruff"

bootstrap:
	@bash scripts/bootstrap.sh

bootstrap-test:
	@bash scripts/bootstrap.sh --test

demo: bootstrap
	@$(STEPLEDGER) up
	@$(STEPLEDGER) demo

up: bootstrap
	@$(STEPLEDGER) up

down:
	@if [ -x $(STEPLEDGER) ]; then $(STEPLEDGER) down; else echo "stepledger: not set up, nothing to stop"; fi

status:
	@$(STEPLEDGER) status

migrate: bootstrap
	@$(STEPLEDGER) migrate

schema: bootstrap
	@$(STEPLEDGER) schema-snapshot

test: bootstrap-test
	$(PY) -m pytest $(PYTEST_FLAGS)

bench: bootstrap
	$(PY) -m bench

lint: bootstrap-test
	$(VENV)/bin/ruff check .
