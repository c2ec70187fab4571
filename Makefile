# medseg developer entry points. `make demo` and `make test` each install what they need first
# (a virtual environment in .venv and an editable install) and are safe to run again.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build to install before medseg. Here: the CPU wheel. On a CUDA machine the same pin from
# PyPI is the CUDA build (see docs/index.md).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.medseg-installed
PYTEST_ARGS ?=

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements/nnunet-nodeps.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[nnunet,cuda,dev]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/nnunet-nodeps.txt
	$(BIN)/python -m medseg --version
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/medseg demo --output demo

clean-venv:
	rm -rf $(VENV)
