# Entry points for a fresh machine: `make fig9` (the demo figure) and `make test` (the test suite).
# Both create .venv with CPU PyTorch 2.13 first (never a bare `torch`, which would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: env test fig9 repro clean-results

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,pipeline]'
	touch $@

test: env
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

fig9: env
	$(BIN)/snakemake --profile profiles/default -- results/figures/fig9.png

repro: env
	$(BIN)/dvc repro
