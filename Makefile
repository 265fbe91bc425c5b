VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup test test-slurm lint format

# Creates $(VENV) and installs torch, detectron2 and this package (scripts/setup_env.sh).
setup:
	VENV=$(VENV) bash scripts/setup_env.sh

# Runs the whole test suite on the CPU, but tests/slurm (make test-slurm runs that folder, the
# submission checks included, beside its local cluster).
test:
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile tests --ignore=tests/slurm $(PYTEST_ARGS)

# Runs the SLURM tests on a private one-node cluster on localhost (root: installs slurm-wlm and
# munge with apt-get when missing; scripts/test_slurm.sh).
test-slurm:
	VENV=$(VENV) PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test_slurm.sh

lint:
	$(VENV)/bin/ruff check retina_plugin tests tools train_net.py scripts
	$(VENV)/bin/ruff format --check retina_plugin tests tools train_net.py scripts

format:
	$(VENV)/bin/ruff format retina_plugin tests tools train_net.py scripts
