"""Rewrite a wheel's tags to ``py3-none-any`` and print the new file's path.

PyPI's only detectron2 republication (``sal-detectron2``) is a CPython 3.10 wheel. Its Python code
runs on any Python >= 3.8; only the compiled ``detectron2._C`` is tied to 3.10, and nothing in
RetinaNet needs it. pip refuses the wheel's tag on other Pythons, so ``make setup`` re-tags it.

Its metadata is corrected too: it requires ``numpy<2`` (detectron2 runs on numpy 2, which current
opencv-python needs; this project's tests run on it) and omits ``fvcore`` and ``iopath``, which
detectron2 imports. With the old requirements pip printed a resolver ERROR during ``make setup``
and ``pip check`` failed.

Usage: python scripts/retag_wheel.py WHEEL_FILE OUTPUT_DIR
"""

import base64
import hashlib
import os
import re
import sys
import zipfile

NEW_TAG = "py3-none-any"
# The republication's requirements: replaced (numpy 2 works) and added (imported by detectron2).
REPLACED_REQUIREMENTS = {"numpy<2": "numpy"}
ADDED_REQUIREMENTS = ("fvcore", "iopath")


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fix_requirements(metadata: str) -> bytes:
    """`metadata` (a METADATA file) with REPLACED_REQUIREMENTS replaced and ADDED_REQUIREMENTS
    added after the last unconditional Requires-Dist line."""
    prefix = "Requires-Dist: "
    lines = metadata.split("\n")
    unconditional = [
        i for i, line in enumerate(lines) if line.startswith(prefix) and "extra ==" not in line
    ]
    added = [prefix + name for name in ADDED_REQUIREMENTS]
    lines[unconditional[-1] + 1 : unconditional[-1] + 1] = added
    for i, line in enumerate(lines):
        requirement = line[len(prefix) :] if line.startswith(prefix) else None
        if requirement in REPLACED_REQUIREMENTS:
            lines[i] = prefix + REPLACED_REQUIREMENTS[requirement]
    return "\n".join(lines).encode()


def retag(wheel_path: str, output_dir: str) -> str:
    name, version = os.path.basename(wheel_path).split("-")[:2]
    out_path = os.path.join(output_dir, f"{name}-{version}-{NEW_TAG}.whl")
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel_path) as src:
        wheel_meta = src.read(f"{dist_info}/WHEEL").decode()
        changed = {
            f"{dist_info}/WHEEL": re.sub(r"(?m)^Tag: .*$", f"Tag: {NEW_TAG}", wheel_meta).encode(),
            f"{dist_info}/METADATA": fix_requirements(src.read(f"{dist_info}/METADATA").decode()),
        }
        record = []
        for line in src.read(f"{dist_info}/RECORD").decode().splitlines():
            path = line.split(",")[0]
            if path in changed:
                line = f"{path},{_record_hash(changed[path])},{len(changed[path])}"
            record.append(line)
        changed[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
        tmp_path = out_path + ".partial"
        with zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                dst.writestr(item, changed.get(item.filename) or src.read(item.filename))
    os.replace(tmp_path, out_path)
    return out_path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(retag(sys.argv[1], sys.argv[2]))
