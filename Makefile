# One entry point for developers and users. `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PHASE := scripts/phase
POOL ?= demo
MACHINES ?= 4

.PHONY: help setup test lint unit demo pool-up pool-down images clean lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install Docker, debootstrap and the pinned Python packages (.venv)
	@$(PHASE) setup scripts/setup-host

test: setup ## everything CI runs: lint, ansible-test, then all tests on a fresh local pool
	@$(PHASE) lint $(MAKE) --no-print-directory lint
	@$(PHASE) ansible-test scripts/ansible-test
	@$(PHASE) images $(BIN)/python -m tests.pool images
	@$(PHASE) pytest scripts/pytest-all

lint: ## ansible-lint (production profile), ruff, yamllint
	@$(PHASE) ruff $(BIN)/ruff check .
	@$(PHASE) yamllint $(BIN)/yamllint --strict .
	@$(PHASE) ansible-lint $(BIN)/ansible-lint --profile production

unit: setup ## the tests that need neither Docker nor a Ray head
	@$(BIN)/python -m pytest -m 'not pool and not molecule and not e2e and not ray'

demo: setup ## a local pool, a Ray cluster on it, a job that makes the agent scale it
	@scripts/demo

pool-up: setup ## create the local pool POOL (default demo) with MACHINES machines
	@$(BIN)/python -m tests.pool up $(POOL) --machines $(MACHINES)

pool-down: ## remove the local pool POOL (default demo)
	@$(BIN)/python -m tests.pool down $(POOL)

images: setup ## build (or find cached) the pool's images and the nodes' wheelhouse
	@$(BIN)/python -m tests.pool images

clean: ## remove every local pool, the venv and caches in the checkout (images stay)
	-@[ -x $(BIN)/python ] && $(BIN)/python -m tests.pool down --all
	rm -rf $(VENV) .cache .pool .pytest_cache .ruff_cache .hypothesis

lock: ## re-pin requirements/dev.txt from requirements/dev.in in a clean venv
	rm -rf .cache/lock-venv && python3 -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install --quiet -r requirements/dev.in
	{ echo "# Generated from requirements/dev.in by 'make lock'."; \
	  .cache/lock-venv/bin/pip freeze --all --exclude pip; } > requirements/dev.txt
