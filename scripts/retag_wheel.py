"""Rewrite a wheel's tags to ``py3-none-any`` and print the new file's path.

PyPI's only detectron2 republication (``sal-detectron2``) is a CPython 3.10 wheel. Its Python code
runs on any Python >= 3.8; only the compiled ``detectron2._C`` is tied to 3.10, and nothing in
RetinaNet needs it. pip refuses the wheel's tag on other Pythons, so ``make setup`` re-tags it.

Usage: python scripts/retag_wheel.py WHEEL_FILE OUTPUT_DIR
"""

import base64
import hashlib
import os
import re
import sys
import zipfile

NEW_TAG = "py3-none-any"


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def retag(wheel_path: str, output_dir: str) -> str:
    name, version = os.path.basename(wheel_path).split("-")[:2]
    out_path = os.path.join(output_dir, f"{name}-{version}-{NEW_TAG}.whl")
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel_path) as src:
        wheel_meta = src.read(f"{dist_info}/WHEEL").decode()
        wheel_meta = re.sub(r"(?m)^Tag: .*$", f"Tag: {NEW_TAG}", wheel_meta).encode()
        record = src.read(f"{dist_info}/RECORD").decode().splitlines()
        record = [
            f"{dist_info}/WHEEL,{_record_hash(wheel_meta)},{len(wheel_meta)}"
            if line.startswith(f"{dist_info}/WHEEL,")
            else line
            for line in record
        ]
        tmp_path = out_path + ".partial"
        with zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename == f"{dist_info}/WHEEL":
                    dst.writestr(item, wheel_meta)
                elif item.filename == f"{dist_info}/RECORD":
                    dst.writestr(item, "\n".join(record) + "\n")
                else:
                    dst.writestr(item, src.read(item.filename))
    os.replace(tmp_path, out_path)
    return out_path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(retag(sys.argv[1], sys.argv[2]))
