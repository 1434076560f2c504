# The README's two commands: `make run` and `make test`. Both bootstrap .venv from the lock files:
# `make run` from requirements.lock alone (what mpchat needs to run), `make test` (and `make
# bench`) from requirements-dev.lock too (the tools, on top of the same runtime pins).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test test-types test-python test-clients test-container check-runtime bench clean

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

# pytest-xdist workers for the Python suite: one more than the cores (its tests spend about half
# their time waiting on sockets and timers), at most 8. Each worker has its own databases.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 7 ] && n=7; echo $$((n + 1)))

# ruff; then side by side: mypy, the Python suite in parallel, the clients' tests (mostly waiting
# on timers and sockets), the runtime lock's fresh venv and the container image (where podman is
# installed); then, alone, the few tests that bound wall-clock time (marked `timing`). How the
# suite is laid out and run: docs/architecture.md, "Dependencies and tests".
test: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	@# Bytecode for the tree, once: where PYTHONDONTWRITEBYTECODE is set (as on the CI machines),
	@# every Python process the suite starts (workers, servers, fakes) would compile it again.
	$(BIN)/python -m compileall -q src tests
	@echo "mypy, pytest -n $(TEST_WORKERS), the clients' tests, the runtime-lock check and the image's"
	@echo "test run side by side; each one's output appears when it ends."
	@$(MAKE) --no-print-directory -j5 --output-sync=target \
		test-types test-python test-clients check-runtime test-container
	$(BIN)/python -m pytest -q -p no:xdist -m timing

test-types: $(DEV_STAMP)
	$(BIN)/mypy

test-python: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not timing and not container"

# The image built and run by podman (tests/container, docs/deployment.md "The image, tested"):
# about 40 s with the cached base and wheelhouse, 4 min the first time. Without podman it
# says so and passes: no engine is a fact of the machine, not a failure of the code.
test-container: $(DEV_STAMP)
	@if command -v podman >/dev/null; then $(BIN)/python -m pytest -q -p no:xdist -m container tests/container; \
	else echo "test-container: skipped, podman is not installed (docs/deployment.md)"; fi

test-clients: $(DEV_STAMP)
	@if [ -f clients/Makefile ]; then $(MAKE) -C clients test; fi

# A fresh venv from requirements.lock alone (the deployment image's view): imports, serves.
# Niced: `make test` runs it beside the Python suite, whose end is the whole run's.
check-runtime: $(STAMP)
	nice -n 10 .ci/check-runtime-lock

bench: $(DEV_STAMP)
	$(BIN)/python bench/bench_chat.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
