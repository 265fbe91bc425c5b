"""Datasets registered the Detectron2 way (``register_coco_instances``, as its tutorials do),
run through a train_net.py that registers them so (tests/train_net_registered.py): a broken json
stops with the dataset, the file and the fault named, in training and in evaluation."""

import json
import subprocess
import sys

import pytest

from tests.utils import QUICKSTART, REPO_ROOT, generate_tiny_shapes, tiny_shapes_overrides


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("registered")
    generate_tiny_shapes(root / "shapes")
    val = next(p for p in (root / "shapes").iterdir() if p.name.startswith("shapes_val"))
    return root, val / "annotations.json", val / "images"


def _run(root, train_json, val_json, image_root, *argv):
    command = [
        sys.executable, "-m", "tests.train_net_registered", "--train-json", str(train_json),
        "--val-json", str(val_json), "--image-root", str(image_root), *argv,
        "--config-file", QUICKSTART, *tiny_shapes_overrides(root / "shapes", max_iter=1),
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(root / "out"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stderr.strip().splitlines()[-1]


def test_a_json_cut_in_half(shapes, tmp_path):
    root, good, images = shapes
    text = good.read_text()
    broken = tmp_path / "train.json"
    broken.write_text(text[: len(text) // 2])
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(broken.read_text())
    assert _run(root, broken, good, images) == (
        f"retina_plugin.data.coco_json.DatasetLoadError: Could not load dataset 'my_train' from "
        f"{broken}: {broken} is not valid JSON: {error.value.msg} at line {error.value.lineno}, "
        f"column {error.value.colno}."
    )


def test_duplicate_annotation_ids(shapes, tmp_path):
    root, good, images = shapes
    data = json.loads(good.read_text())
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    broken = tmp_path / "train.json"
    broken.write_text(json.dumps(data))
    assert _run(root, broken, good, images) == (
        f"retina_plugin.data.coco_json.DatasetLoadError: Could not load dataset 'my_train' from "
        f"{broken}: {broken}: annotation ids must be unique, but 1 ids occur more than once: "
        f"{data['annotations'][0]['id']!r}. Give every annotation its own id."
    )


def test_an_unknown_category_in_the_test_set(shapes, tmp_path):
    """--eval-only: the test set's json is loaded by the test loader."""
    root, good, images = shapes
    data = json.loads(good.read_text())
    annotation = data["annotations"][2]
    annotation["category_id"] = 99
    broken = tmp_path / "val.json"
    broken.write_text(json.dumps(data))
    ids = sorted(c["id"] for c in data["categories"])
    assert _run(root, good, broken, images, "--eval-only") == (
        f"retina_plugin.data.coco_json.DatasetLoadError: Could not load dataset 'my_val' from "
        f"{broken}: {broken}: annotation {annotation['id']!r} (image {annotation['image_id']!r}) "
        f"has category_id 99, which is not in 'categories' (ids {ids}). Add the category or fix "
        "the annotation."
    )
