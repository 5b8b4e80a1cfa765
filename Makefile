# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv on first use (CPU torch first,
# so that pip never pulls a CUDA build), and are quick no-ops for the install step afterwards.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Where pip looks for torch; on machines without a local wheel use the CPU index of pytorch.org.
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.dynmm-installed

.PHONY: demo test test-slow check install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dynmm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

check: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

clean-venv:
	rm -rf $(VENV)
