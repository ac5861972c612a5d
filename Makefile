# xmkd: every target installs what it needs first (a no-op when .venv is up to date).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not slow'"`.
PYTEST_ARGS ?=

.PHONY: install test test-fast lint format clean bench bench-decode bench-metrics

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check xmkd tests benchmarks
	$(BIN)/ruff format --check xmkd tests benchmarks

format: install
	$(BIN)/ruff format xmkd tests benchmarks
	$(BIN)/ruff check --fix xmkd tests benchmarks

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: bench-decode bench-metrics

bench-decode: install
	$(BIN)/python benchmarks/decode.py

bench-metrics: install
	$(BIN)/python benchmarks/metrics.py

clean:
	rm -rf runs wandb lightning_logs .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
