# Every target sets itself up: a fresh machine needs only Python 3.11+, git, make and a C compiler.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup constraints demo test test-unit test-integration chaos lint typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# constraints.txt pins every dependency (runtime and dev) to the versions tested: a fresh .venv
# and the image get the same ones.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the package with its dev extras, as constraints.txt pins them

constraints: $(STAMP) ## rewrite constraints.txt from .venv (after `.venv/bin/pip install -U -e '.[dev]'`)
	$(BIN)/python -m connector.devtools.constraints > constraints.txt.new
	mv constraints.txt.new constraints.txt

demo: $(STAMP) ## run the whole pipeline end to end on a local broker and the MoEngage sandbox
	$(BIN)/python -m connector.demo

# Two workers, one test file each at a time: the suite mostly waits on rate windows, outages and
# rebalances (about a third of a core busy), and each worker starts its own broker. A file's tests
# stay together and in order.
test: $(STAMP) ## run the whole suite: unit tests, then integration tests on a real broker and the sandbox
	$(BIN)/python -m pytest tests -m "not slow" -n 2 --dist loadfile --durations=15

test-unit: $(STAMP) ## unit tests only (no processes)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) ## integration tests only
	$(BIN)/python -m pytest tests/integration -m "not slow"

chaos: $(STAMP) ## the long fault-injection variants
	$(BIN)/python -m pytest tests/integration -m slow

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check connector tests bench
	$(BIN)/ruff format --check connector tests bench

typecheck: $(STAMP) ## mypy --strict on connector/
	$(BIN)/mypy

bench: $(STAMP) ## throughput, CPU, memory and latency figures
	$(BIN)/python -m bench

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info .demo .bench
