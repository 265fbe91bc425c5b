"""What the analysis tests share: a tiny COCO dataset with its config, and the tools run as a
user runs them."""

import os
import subprocess
import sys

from tests.data_files import write_coco_dataset
from tests.utils import REPO_ROOT, tiny_config

IMAGE_SIZE = 128
# (category_id, COCO [x, y, w, h]) per image. With tiny_config's anchors (sizes 32 * 2^(i/3) on
# P3 at stride 8, offset 0, ratios h/w 0.5 / 1 / 2; 64.. on P4 and up):
BOX_EQUAL_TO_ANCHOR = (1, [0, 0, 32, 32])  # the 32 x 32 anchor centred at (16, 16): IoU 1
BOX_TINY = (2, [32, 32, 16, 16])  # inside a 32 x 32 anchor at best: IoU 16^2 / 32^2 = 0.25
BOX_TALL = (3, [24, 16, 16, 96])  # h/w = 6, centred on the grid point (32, 64)
TINY_IMAGES = [[BOX_EQUAL_TO_ANCHOR, BOX_TINY], [BOX_TALL]]


def tiny_setup(tmp_path, name: str) -> tuple[str, list[str]]:
    """tiny_config written as a YAML file, and the KEY VALUE list that registers TINY_IMAGES as
    dataset `name` (train and test) at IMAGE_SIZE."""
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(tiny_config().dump())
    size = (IMAGE_SIZE, IMAGE_SIZE)
    json_file, image_root = write_coco_dataset(str(tmp_path / "data"), TINY_IMAGES, size=size)
    opts = [
        "DATASETS.FOCAL_RETINA.COCO", str([[name, json_file, image_root]]),
        "DATASETS.TRAIN", f"('{name}',)",
        "DATASETS.TEST", f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN", f"({IMAGE_SIZE},)",
        "INPUT.MAX_SIZE_TRAIN", str(IMAGE_SIZE),
        "INPUT.MIN_SIZE_TEST", str(IMAGE_SIZE),
        "INPUT.MAX_SIZE_TEST", str(IMAGE_SIZE),
        "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    return str(config_file), opts


def run_tool(name: str, *argv, cwd=REPO_ROOT) -> str:
    """Run ``python tools/<name>.py ARGV`` in `cwd` as a user does; return its stdout."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", f"{name}.py"), *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
