"""What `make setup` leaves: no broken requirements (pip check), and the re-tagged detectron2
republication with corrected requirements (scripts/retag_wheel.py)."""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile

from tests.utils import REPO_ROOT

RETAG = os.path.join(REPO_ROOT, "scripts", "retag_wheel.py")
DIST_INFO = "sal_detectron2-0.7.2.dist-info"
METADATA = """Metadata-Version: 2.1
Name: sal-detectron2
Version: 0.7.2
Requires-Dist: Pillow>=7.1
Requires-Dist: numpy<2
Requires-Dist: dataclasses; python_version < "3.7"
Requires-Dist: packaging
Requires-Dist: timm; extra == "all"
"""


def test_pip_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "No broken requirements found.")


def _sha256(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_retag_wheel_corrects_tag_and_requirements(tmp_path):
    """A wheel shaped like PyPI's sal-detectron2 0.7.2: its tag becomes py3-none-any, numpy<2
    becomes numpy, fvcore and iopath are required, and RECORD's hashes match the new files."""
    source = tmp_path / "sal_detectron2-0.7.2-cp310-cp310-linux_x86_64.whl"
    wheel_file = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: cp310-cp310-linux_x86_64\n"
    code = b"__version__ = '0.7.2'\n"
    with zipfile.ZipFile(source, "w") as whl:
        whl.writestr("detectron2/__init__.py", code)
        whl.writestr(f"{DIST_INFO}/WHEEL", wheel_file)
        whl.writestr(f"{DIST_INFO}/METADATA", METADATA)
        whl.writestr(f"{DIST_INFO}/RECORD", f"{DIST_INFO}/WHEEL,x,1\n{DIST_INFO}/METADATA,y,2\n")
    result = subprocess.run(
        [sys.executable, RETAG, str(source), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    output = tmp_path / "sal_detectron2-0.7.2-py3-none-any.whl"
    assert result.stdout.strip() == str(output)

    with zipfile.ZipFile(output) as whl:
        files = {name: whl.read(name) for name in whl.namelist()}
    metadata = files[f"{DIST_INFO}/METADATA"].decode()
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert requirements == [
        "Requires-Dist: Pillow>=7.1",
        "Requires-Dist: numpy",
        'Requires-Dist: dataclasses; python_version < "3.7"',
        "Requires-Dist: packaging",
        "Requires-Dist: fvcore",
        "Requires-Dist: iopath",
        'Requires-Dist: timm; extra == "all"',
    ]
    assert "Tag: py3-none-any\n" in files[f"{DIST_INFO}/WHEEL"].decode()
    assert files["detectron2/__init__.py"] == code
    record = files[f"{DIST_INFO}/RECORD"].decode().splitlines()
    for name in ("WHEEL", "METADATA"):
        data = files[f"{DIST_INFO}/{name}"]
        assert f"{DIST_INFO}/{name},{_sha256(data)},{len(data)}" in record
