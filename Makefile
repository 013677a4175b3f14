# The two commands of the README: `make run` (the main job) and `make test`.
# Each creates .venv and installs prunelab into it when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

$(BIN)/prunelab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install run test test-all lint
install: $(BIN)/prunelab

run: install
	$(BIN)/python -m prunelab model=cnn pruning=iterative $(ARGS)

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
