#!/usr/bin/env bash
# `make setup`: creates .venv in the repo and installs everything retina-plugin needs.
# Each step skips itself when its result is already there, so a second run takes seconds.
#
# Environment variables:
#   PYTHON            interpreter for the venv (default: python3; 3.9-3.12 work)
#   VENV              venv folder (default: .venv)
#   TORCH_SPEC        pip requirement(s) for PyTorch (default: torch==2.14.1 torchvision==0.29.1);
#                     skipped when the venv already imports torch >= 2.1
#   DETECTRON2_SPEC   pip requirement for detectron2, e.g. a git URL or a local source folder for a
#                     from-source build with the compiled `_C`; skipped when the venv already
#                     imports detectron2. Default: PyPI's Python-only republication (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_REPUBLICATION="sal-detectron2==0.7.2"
# The republication's metadata pins numpy<2 (current opencv-python needs numpy>=2, and detectron2
# runs on numpy 2) and omits fvcore and iopath: scripts/retag_wheel.py corrects both, and the
# wheel is installed with --no-deps, then these, its real runtime dependencies.
D2_RUNTIME_DEPS=(Pillow matplotlib "pycocotools>=2.0.2" "termcolor>=1.1" "yacs>=0.1.8" tabulate
  cloudpickle "tqdm>4.29.0" tensorboard "omegaconf>=2.1,<2.4" "hydra-core>=1.1" black packaging
  fvcore iopath)
CACHE_DIR="$VENV/.setup-cache"

step=""
on_error() {
  echo >&2
  echo "make setup: step '$step' failed (see the pip output above)." >&2
  case "$step" in
    venv) echo "Check that '$PYTHON -m venv' works (Debian: apt-get install python3-venv), or set PYTHON." >&2 ;;
    torch) echo "Set TORCH_SPEC to a torch>=2.1 build for your machine, e.g. TORCH_SPEC='torch torchvision'." >&2 ;;
    detectron2) echo "Install detectron2 into $VENV yourself or set DETECTRON2_SPEC (README.md, section 'Installing'; docs/INSTALL.md)." >&2 ;;
    check) echo "The lines above name each package whose requirements are not met: install what they ask for into $VENV, or delete $VENV and run 'make setup' again." >&2 ;;
    *) echo "Delete $VENV and run 'make setup' again; if it fails again, the message above names the package." >&2 ;;
  esac
}
trap on_error ERR

pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -c constraints.txt "$@"
}
venv_can() {
  "$VENV/bin/python" -c "$1" >/dev/null 2>&1
}

step=venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

step=build-tools
if ! venv_can "import pkg_resources, wheel"; then
  echo "[setup] installing setuptools<81 and wheel"
  pip_install "setuptools<81" wheel
fi

step=torch
if venv_can "import torch, torchvision, sys; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 1))"; then
  echo "[setup] torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
else
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086  # TORCH_SPEC holds several requirements
  pip_install $TORCH_SPEC
fi

step=detectron2
install_republication() {
  rm -rf "$CACHE_DIR" && mkdir -p "$CACHE_DIR"
  "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps \
    --only-binary=:all: --python-version 3.10 -d "$CACHE_DIR" "$D2_REPUBLICATION"
  # Re-tagged for any Python 3, with corrected requirements (scripts/retag_wheel.py).
  wheel=$("$VENV/bin/python" scripts/retag_wheel.py "$CACHE_DIR"/sal_detectron2-*-cp310-*.whl "$CACHE_DIR")
  pip_install --no-deps --force-reinstall "$wheel"
  pip_install "${D2_RUNTIME_DEPS[@]}"
}
# A republication installed by an older `make setup` still requires numpy<2.
old_republication="import importlib.metadata as m, sys
sys.exit(not any(r.startswith('numpy<2') for r in m.requires('sal-detectron2') or []))"
if venv_can "$old_republication"; then
  echo "[setup] re-installing $D2_REPUBLICATION with corrected requirements"
  install_republication
elif venv_can "import detectron2"; then
  echo "[setup] detectron2 $("$VENV/bin/python" -c 'import detectron2; print(detectron2.__version__)') already installed"
elif [ -n "${DETECTRON2_SPEC:-}" ]; then
  echo "[setup] installing detectron2 from $DETECTRON2_SPEC"
  # A source build compiles against the torch installed above, so no isolated build env.
  pip_install --no-build-isolation "$DETECTRON2_SPEC"
else
  echo "[setup] installing detectron2 from PyPI's $D2_REPUBLICATION (Python-only, see docs/INSTALL.md)"
  install_republication
fi

step=retina-plugin
stamp="$VENV/.retina-plugin-installed"
fingerprint=$(cat setup.py constraints.txt | "$VENV/bin/python" -c "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && venv_can "import retina_plugin"; then
  echo "[setup] retina-plugin already installed (editable)"
else
  echo "[setup] installing retina-plugin (editable) with its dev extras (tests, SLURM, export)"
  pip_install -e ".[dev]"
  echo "$fingerprint" >"$stamp"
fi

step=check
# No broken requirements left (pip check prints them and fails otherwise).
"$VENV/bin/python" -m pip check --disable-pip-version-check
# (-W: Detectron2's and fvcore's imports warn that torch 2.14 deprecates torch.jit.script.)
"$VENV/bin/python" -W "ignore:\`torch.jit.script\` is deprecated:FutureWarning" - <<'PY'
import importlib.metadata as md
import setuptools, torch, detectron2, retina_plugin

major = int(setuptools.__version__.split(".")[0])
assert major < 81, f"setuptools {setuptools.__version__} is installed; detectron2 needs setuptools<81"
print(f"[setup] ok: torch {torch.__version__}, detectron2 {detectron2.__version__}, "
      f"retina-plugin {md.version('retina-plugin')}, setuptools {setuptools.__version__}")
PY
