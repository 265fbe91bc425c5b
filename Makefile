VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup test lint format

# Creates $(VENV) and installs torch, detectron2 and this package (scripts/setup_env.sh).
setup:
	VENV=$(VENV) bash scripts/setup_env.sh

# Runs the whole test suite on the CPU.
test:
	$(VENV)/bin/python -m pytest -q tests $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check retina_plugin tests tools train_net.py scripts
	$(VENV)/bin/ruff format --check retina_plugin tests tools train_net.py scripts

format:
	$(VENV)/bin/ruff format retina_plugin tests tools train_net.py scripts
