#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the Python 3.12 x86_64 wheels that a bare GPU machine (torch,
# torchvision, numpy, opencv, pillow, pyyaml, tabulate, portalocker, cloudpickle, onnx and its
# protobuf, no network) lacks for retina-plugin, train_net.py and tools/gpu_check.py; there:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#
# The versions are those `make setup` installed here (Python 3.11). detectron2 is PyPI's
# Python-only republication, re-tagged py3-none-any (scripts/retag_wheel.py) and without its
# compiled detectron2/_C (built for CPython 3.10: it cannot load on 3.12, and RetinaNet does not
# need it). fvcore, iopath 0.1.10 and antlr4 are published as sources only: built here (pure).
#
# Environment variables: PYTHON (default python3), OUT (default .whl).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-.whl}
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT

PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
  manylinux1_x86_64 any)
# detectron2's and fvcore's imports (matplotlib for Detectron2's Visualizer, tensorboard for its
# TensorboardXWriter, setuptools<81 for its pkg_resources), and pytest for tests/cuda.
BINARIES=(pycocotools==2.0.11 faster-coco-eval==1.8.0 yacs==0.1.8 omegaconf==2.3.1
  hydra-core==1.3.8 termcolor==3.3.0 tqdm==4.70.1 setuptools==80.10.2 matplotlib==3.11.2
  contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1 pyparsing==3.3.3
  python-dateutil==4.0.0 packaging==26.4 tensorboard==2.21.0 absl-py==2.5.1 pytest==9.2.0
  pluggy==1.7.0 iniconfig==2.3.1 Pygments==2.21.0)
SOURCES=(fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3)

mkdir -p "$OUT"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]/#/--platform=}" -d "$OUT" "${BINARIES[@]}"
"$PYTHON" -m pip wheel -q --no-deps -w "$BUILD" "${SOURCES[@]}"
cp "$BUILD"/*.whl "$OUT"/

"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$BUILD" \
  sal-detectron2==0.7.2
retagged=$("$PYTHON" scripts/retag_wheel.py "$BUILD"/sal_detectron2-*-cp310-*.whl "$BUILD")
"$PYTHON" - "$retagged" "$OUT" <<'PY'
import os, sys, zipfile

source, out = sys.argv[1:]
target = os.path.join(out, os.path.basename(source))
with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if item.filename.endswith(".so"):
            continue
        data = src.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = ("\n".join(x for x in lines if ".so," not in x) + "\n").encode()
        dst.writestr(item, data)
print(target)
PY
du -sh "$OUT"
