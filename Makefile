# The two commands of the README:
#   make run   set up (first time) and start the service on ./var with config.example.yaml
#   make test  set up (first time) and run the test suite
# Everything installs into ./.venv from PyPI; FFmpeg comes inside the PyAV wheel.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this kind of machine's disk; GPU hosts install their own first.
TORCH ?= torch==2.13.0

# The mediapipe wheel the face models were converted from: with it, the tests also prove that
# tools/convert_mediapipe_faces.py rebuilds engine/faces/weights byte for byte. Fetched once
# (pip download, no install); offline, that one test says loudly that it did not run.
MEDIAPIPE_WHEEL_DIR := $(VENV)/wheels

.PHONY: run test setup clean

$(BIN)/lipsyncd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,ray]"
	touch $@

setup: $(BIN)/lipsyncd

run: setup
	LIPSYNCD_CONFIG=config.example.yaml $(BIN)/lipsyncd run

test: setup
	@ls $(MEDIAPIPE_WHEEL_DIR)/mediapipe-0.10.14-*.whl >/dev/null 2>&1 || \
		$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
			--platform manylinux_2_17_x86_64 -d $(MEDIAPIPE_WHEEL_DIR) mediapipe==0.10.14 || true
	LIPSYNCD_MEDIAPIPE_WHEEL="$$(ls $(MEDIAPIPE_WHEEL_DIR)/mediapipe-0.10.14-*.whl 2>/dev/null | head -n 1)" \
		$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) var
