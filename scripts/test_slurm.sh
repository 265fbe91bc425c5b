#!/usr/bin/env bash
# `make test-slurm`: the SLURM tests (tests/slurm/test_cluster.py) against a private one-node
# cluster on localhost, started here (scripts/slurm_cluster.sh installs slurm-wlm and munge with
# apt-get when they are missing) and stopped by its pids whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTEST_ARGS=${PYTEST_ARGS:-}

dir=$(mktemp -d /tmp/retina-slurm.XXXXXX)
chmod 755 "$dir"
cleanup() {
  bash scripts/slurm_cluster.sh stop "$dir" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash scripts/slurm_cluster.sh start "$dir"
export SLURM_CONF="$dir/slurm.conf"
export RETINA_PLUGIN_SLURM_TESTS=1
# shellcheck disable=SC2086  # PYTEST_ARGS holds several arguments
"$VENV/bin/python" -m pytest -q tests/slurm $PYTEST_ARGS
