# vaultdr — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test lint typecheck unit up down status drill bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check vaultdr tests benchmarks
	$(BIN)/ruff format --check vaultdr tests benchmarks

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: lint typecheck unit

up: setup
	$(BIN)/vaultdr up

down: setup
	$(BIN)/vaultdr down

status: setup
	$(BIN)/vaultdr status

bench: setup
	$(BIN)/python benchmarks/cold_start.py

clean:
	-$(BIN)/vaultdr down 2>/dev/null
	rm -rf $(VENV) .vaultdr .pytest_cache .mypy_cache .ruff_cache
