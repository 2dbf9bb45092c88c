# Everything starts from a bare python3: the first target run creates .venv and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-base: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-base

DEMO_DIR ?= runs/demo

## The main job: train a tiny T5 on the embedded demo mixture (starts afresh in $(DEMO_DIR)).
demo: $(VENV)/.installed-base
	$(BIN)/flantune inspect demo --examples 2000 --rendered 2
	rm -rf $(DEMO_DIR)
	$(BIN)/flantune train --gin_file=gin_configs/runs/demo.gin --gin.MODEL_DIR="'$(DEMO_DIR)'"

## Lint and the whole test suite (slow tests included), in up to 4 worker processes: most tests
## are bound by single-threaded compilation, so on 2 cores two workers take ~20% less time.
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n auto --maxprocesses=4

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
