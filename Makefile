# Shuyu — the two commands: `make demo` and `make test` (both set everything up).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test test-postgres lint typecheck unit bench clean install install-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

# uv resolves and installs the ~160 dependencies in seconds; pip is the fallback. Bytecode is
# compiled at install: presidio, spacy and prefect otherwise cost seconds per test process.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e . \
		|| $(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]' \
		|| $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

$(VENV)/.installed-pg: pyproject.toml $(VENV)/.installed-dev
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev,postgres]' \
		|| $(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/shuyu demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest -q

test: lint typecheck unit

# The state-database tests (audit chain, ledger, concurrency, tickets, consents) again on a
# throwaway PostgreSQL server; CI runs this after `make test`.
PG_TESTS := tests/governance/test_gov_audit.py tests/governance/test_gov_concurrency.py \
	tests/governance/test_gov_consent.py tests/products/test_products_ledger.py \
	tests/products/test_products_ledger_integrity.py \
	tests/quality/test_quality_tickets.py tests/portal/test_portal_auth.py \
	tests/reliability/test_rel_audit_consistency.py tests/ops/test_ops_pull_database.py
test-postgres: $(VENV)/.installed-pg
	PATH=$(CURDIR)/$(BIN):$$PATH bash .ci/with_postgres.sh $(BIN)/pytest -q $(PG_TESTS)

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .shuyu .mypy_cache .ruff_cache .pytest_cache
