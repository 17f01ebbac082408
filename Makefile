# westep-ops: `make demo` and `make test` each do every set-up step themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SANDBOX_ENV = eval "$$($(BIN)/westep-ops sandbox env)"

.PHONY: demo test setup system-deps lint format validate ui sandbox-up sandbox-down clean

## demo: set up, start the sandbox, run the main job against it
demo: setup sandbox-up
	@$(SANDBOX_ENV) && $(BIN)/westep-ops test-connection
	@echo
	@echo "Sandbox running. Next: eval \"\$$($(BIN)/westep-ops sandbox env)\"; $(BIN)/westep-ops --help"
	@echo "Dagster UI: make ui   |   stop the sandbox: make sandbox-down"

## test: set up, lint, and run the whole test suite (it starts its own sandbox)
test: setup lint
	$(BIN)/pytest

setup: system-deps $(STAMP)

# PostgreSQL 15 and pgbouncer come from Debian. As root we install them; otherwise we
# say the one command to run rather than failing later in an obscure way.
system-deps:
	@if [ -x /usr/lib/postgresql/15/bin/postgres ] && { command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; }; then \
	  exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "Installing PostgreSQL 15 and pgbouncer with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 pgbouncer >/dev/null; \
	else \
	  echo "Missing system packages. Run: sudo apt-get update && sudo apt-get install -y postgresql-15 pgbouncer"; \
	  exit 1; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## validate: the Dagster code location loads (no secrets needed)
validate: $(STAMP)
	@tmp=$$(mktemp -d) && DAGSTER_HOME=$$tmp $(BIN)/dagster definitions validate -w workspace.yaml; rc=$$?; rm -rf $$tmp; exit $$rc

## ui: Dagster webserver + daemon on http://127.0.0.1:3000, against the sandbox
ui: setup sandbox-up
	@$(SANDBOX_ENV) && $(BIN)/westep-ops ui

sandbox-up: $(STAMP)
	@$(BIN)/westep-ops sandbox up

sandbox-down: $(STAMP)
	@$(BIN)/westep-ops sandbox down

clean: sandbox-down
	rm -rf .westep
