# The README's two commands: `make run` and `make test`. Both bootstrap .venv from the lock files:
# `make run` from requirements.lock alone (what mpchat needs to run), `make test` (and `make
# bench`) from requirements-dev.lock too (the tools, on top of the same runtime pins).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench check-runtime clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "mpchat needs Python 3.11+"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/python -m pip install -q -r requirements-dev.lock
	touch $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/mpchat serve

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	@if [ -f clients/Makefile ]; then $(MAKE) -C clients test; fi

# A fresh venv from requirements.lock alone (the deployment image's view): imports, serves.
check-runtime: $(STAMP)
	.ci/check-runtime-lock

bench: $(DEV_STAMP)
	$(BIN)/python bench/bench_chat.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
