# The two commands of the README: `make run` (the main job) and `make test`.
# Each creates .venv and installs prunelab into it when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
# the tests run on both cores (pytest-xdist; a module's tests on one worker, so its fixtures are
# built once; one torch thread per process, so two workers do not spin against each other) in a
# random order (pytest-randomly), its seed printed at the end;
# make test SEED=<that seed> repeats an order
SEED ?=
ORDER := -p randomly $(if $(SEED),--randomly-seed=$(SEED))

$(BIN)/prunelab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install run test test-all lint
install: $(BIN)/prunelab

run: install
	$(BIN)/python -m prunelab model=cnn pruning=iterative $(ARGS)

test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadscope $(ORDER)

test-all: install
	$(BIN)/python -m pytest -q $(ORDER)

lint: install
	$(BIN)/ruff check .
