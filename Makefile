# Quick start: `make run` (the default experiment) and `make test` (lint + tests).
# The virtual environment is created on first use; torch is pinned to the local
# CPU build through constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
ARGS ?=

.PHONY: run test lint bench venv

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/sampleopt run langevin-hex --seed 0 $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/langevin_loop.py
	$(BIN)/python benchmarks/diffusion_sampling.py
	$(BIN)/python benchmarks/estimators.py
	$(BIN)/python benchmarks/finetune_throughput.py
