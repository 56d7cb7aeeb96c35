# The two commands of the README:
#   make run   set up (first time) and start the service on ./var with config.example.yaml
#   make test  set up (first time) and run the test suite
# Everything installs into ./.venv from PyPI; FFmpeg comes inside the PyAV wheel.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this kind of machine's disk; GPU hosts install their own first.
TORCH ?= torch==2.13.0

.PHONY: run test setup clean

$(BIN)/lipsyncd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/lipsyncd

run: setup
	LIPSYNCD_CONFIG=config.example.yaml $(BIN)/lipsyncd run

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) var
