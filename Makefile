# westep-ops: `make demo` and `make test` each do every set-up step themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SANDBOX_ENV = eval "$$($(BIN)/westep-ops sandbox env)"

.PHONY: demo test unit setup system-deps lint format validate ui sandbox-up sandbox-down clean

# The demo's config: the shipped one with a higher hourly repair limit, so that running
# the demo again and again is not refused (the shipped config keeps the seed's 3).
DEMO_CONFIG := .westep/demo-config.json
DEMO = $(SANDBOX_ENV) && WESTEP_OPS_CONFIG=$(DEMO_CONFIG) $(BIN)/westep-ops

## demo: set up, start the sandbox, check it, break it, watch it recover
demo: setup sandbox-up
	@$(BIN)/python -c "import json; d = json.load(open('westep-ops.json')); d['monitoring']['autoRecovery']['maxAttemptsPerHour'] = 60; json.dump(d, open('$(DEMO_CONFIG)', 'w'), indent=2)"
	@echo "== 1. Can we reach everything?"
	@$(DEMO) test-connection
	@echo; echo "== 2. Health check H1-H7"
	@$(DEMO) health-check
	@echo; echo "== 3. Break it: pgbouncer pauses the database, and grants go missing"
	@$(DEMO) sandbox fault pool_pause on
	@$(DEMO) sandbox fault grant_revoke on
	@$(DEMO) health-check; test $$? -eq 2 || { echo "expected a critical health check"; exit 1; }
	@echo; echo "== 4. Automatic recovery"
	@$(DEMO) recover
	@echo; echo "== 5. Healthy again"
	@$(DEMO) health-check
	@$(DEMO) sandbox fault pool_pause off >/dev/null && $(DEMO) sandbox fault grant_revoke off >/dev/null
	@echo; echo "== 6. Diagnosis"
	@$(DEMO) diagnose
	@echo; echo "== 7. Continuous monitoring: the monitor catches a data fault and repairs it (sandbox data is restored after)"
	@$(SANDBOX_ENV) && $(BIN)/python -m westep_ops.sandbox.demo
	@echo; echo "== 8. A short fault drill, then this month's SLA report (drill included)"
	@$(DEMO) drill --faults pool_pause,grant_revoke,orphans,pg_down --interval 3
	@$(DEMO) trends --month $$(TZ=Asia/Tokyo date +%Y-%m)
	@echo
	@echo "Sandbox running. Next: eval \"\$$($(BIN)/westep-ops sandbox env)\"; $(BIN)/westep-ops --help"
	@echo "Reports: logs/   |   Dagster UI: make ui   |   stop the sandbox: make sandbox-down"

## test: set up, lint, run the unit tests, then the integration tests (they start their own sandbox)
test: setup lint
	$(BIN)/pytest westep_ops_tests/unit
	$(BIN)/pytest westep_ops_tests/integration

## unit: only the unit tests (no sandbox, no database): seconds
unit: $(STAMP)
	$(BIN)/pytest westep_ops_tests/unit

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
	$(BIN)/mypy

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
