# vaultdr — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test lint typecheck evidence-schema unit up down status drill upgrade-check bench bench-total-loss bench-failover bench-drill clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check vaultdr tests benchmarks features
	$(BIN)/ruff format --check vaultdr tests benchmarks features
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

# docs/evidence.schema.json from the evidence models (tests/test_evidence_models.py checks it).
evidence-schema: setup
	$(BIN)/python -m vaultdr.evidence.models --write-schema

unit: setup
	$(BIN)/pytest -q

test: lint typecheck unit

up: setup
	$(BIN)/vaultdr up

down: setup
	$(BIN)/vaultdr down

status: setup
	$(BIN)/vaultdr status

# The local drill suite: every DR scenario in features/ against a fresh local stack;
# evidence (evidence.json, report.html, Allure results, JUnit, manifest) in reports/<run-id>/.
drill: setup
	$(BIN)/vaultdr drill --junit

# Pre-upgrade validation on a local copy of the stack: make upgrade-check TO=2.7.2
upgrade-check: setup
	$(BIN)/vaultdr upgrade-check --to $(TO)

bench: setup
	$(BIN)/python benchmarks/cold_start.py

bench-total-loss: setup
	$(BIN)/python benchmarks/total_loss.py

bench-failover: setup
	$(BIN)/python benchmarks/failover.py

bench-drill: setup
	$(BIN)/python benchmarks/drill_suite.py

clean:
	-$(BIN)/vaultdr down 2>/dev/null
	rm -rf $(VENV) .vaultdr .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
