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

.PHONY: demo test test-fast setup system-packages lint clean

demo: setup
	$(BIN)/onecard demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not (broker or postgres or pcsc or subprocess or network)"

setup: system-packages $(STAMP)

system-packages:
	@bash scripts/install-system-packages.sh $(APT_PACKAGES)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
