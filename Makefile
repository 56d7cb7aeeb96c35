# The two commands of the README:
#   make run   set up (first time) and start the service on ./var with config.example.yaml
#   make test  set up (first time) and run the test suite
# and, for a systemd host (README: "Install as a systemd service"), run as the service user:
#   make install PREFIX=/opt/lipsyncd   a venv of the system python in $(PREFIX)/venv with lipsyncd
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

# `make install`: the system python (not a pyenv or conda one that may vanish), lipsyncd itself
# copied in (not editable) and without the test extras.
PREFIX ?= /opt/lipsyncd
# The service's optional parts installed with it: the dashboard and notifications are light,
# openvino runs Wav2Lip on a CPU 1.1-1.4x faster than torch (~180 MB; a GPU host may drop it);
# add musetalk (diffusers + transformers), ray or int8 (+ NNCF) when used: make install EXTRAS=web,notify,openvino,musetalk
EXTRAS ?= web,notify,openvino
SYSTEM_PY ?= /usr/bin/python3
PREFIX_BIN := $(PREFIX)/venv/bin

# Debian packages the test suite drives the way users have them: a real Samba server and client
# (SMB copies into the inbox), libseccomp's binding (the unit's system-call filter) and Chromium
# (the dashboard in a real browser). `make test` installs the missing ones when run as root.
TEST_APT := samba smbclient samba-common-bin python3-seccomp chromium

.PHONY: run test lint setup test-system clean install

$(BIN)/lipsyncd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/lipsyncd

run: setup
	LIPSYNCD_CONFIG=config.example.yaml $(BIN)/lipsyncd run

test-system:
	@missing="$$(for p in $(TEST_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs)"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing the test suite's system packages: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "make test needs these Debian packages: sudo apt-get install $$missing"; exit 1; \
		fi; \
	fi

test: setup test-system lint
	@ls $(MEDIAPIPE_WHEEL_DIR)/mediapipe-0.10.14-*.whl >/dev/null 2>&1 || \
		$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
			--platform manylinux_2_17_x86_64 -d $(MEDIAPIPE_WHEEL_DIR) mediapipe==0.10.14 || true
	LIPSYNCD_MEDIAPIPE_WHEEL="$$(ls $(MEDIAPIPE_WHEEL_DIR)/mediapipe-0.10.14-*.whl 2>/dev/null | head -n 1)" \
		$(BIN)/python -m pytest -q

# ruff, then mypy on the installed layout: daemon/ and engine/ are the packages lipsyncd.daemon and
# lipsyncd.engine (pyproject's package-dir), which mypy cannot see through the editable install, so
# build/typecheck/lipsyncd/ holds two links to them (mypy_path and packages in pyproject.toml).
TYPECHECK := build/typecheck/lipsyncd

lint: setup
	$(BIN)/ruff check daemon engine
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	ln -s ../../../daemon $(TYPECHECK)/daemon
	ln -s ../../../engine $(TYPECHECK)/engine
	touch $(TYPECHECK)/__init__.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var build/typecheck

install:
	$(SYSTEM_PY) -m venv $(PREFIX)/venv
	$(PREFIX_BIN)/pip install -q --no-cache-dir --upgrade pip
	$(PREFIX_BIN)/python -c "import torch" 2>/dev/null || $(PREFIX_BIN)/pip install -q --no-cache-dir "$(TORCH)"
	$(PREFIX_BIN)/pip install -q --no-cache-dir --upgrade ".[$(EXTRAS)]"
	$(PREFIX_BIN)/lipsyncd --help >/dev/null
	@echo "lipsyncd installed: $(PREFIX_BIN)/lipsyncd"
