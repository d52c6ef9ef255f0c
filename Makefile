# convaudit developer commands. `make demo` and `make test` work on a fresh machine:
# each installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of this exact version is on the build machines' disk; any other
# version (or an unpinned torch installed first) pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_MODEL ?= sample_models/resnet_tiny.onnx

.PHONY: install demo test lint typecheck unit samples bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e '.[dev]' "$(TORCH_PIN)"
	touch $@

demo: install
	$(BIN)/convaudit spectrum $(DEMO_MODEL)

lint: install
	$(BIN)/ruff check convaudit tests benchmarks examples
	$(BIN)/ruff format --check convaudit tests

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -n 2 -q

test: lint typecheck unit

samples: install
	$(BIN)/python sample_models/make_samples.py

bench: install
	$(BIN)/python benchmarks/bench_resnet50.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
