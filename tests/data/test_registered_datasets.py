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


def _duplicate_image_id(good, broken):
    """`good` with its second image given the first image's id (pycocotools would merge them)."""
    data = json.loads(good.read_text())
    first, second = data["images"][:2]
    for annotation in data["annotations"]:
        if annotation["image_id"] == second["id"]:
            annotation["image_id"] = first["id"]
    second["id"] = first["id"]
    broken.write_text(json.dumps(data))
    return (
        f"Could not load dataset {{!r}} from {broken}: image ids must be unique, but 1 ids occur "
        f"more than once: {first['id']!r}. pycocotools keeps one image per id, with the "
        "annotations of all of them. Give every image its own id."
    )


@pytest.mark.parametrize("split", ["train", "test"])
def test_duplicate_image_ids(shapes, tmp_path, split):
    """In training, and in evaluation (--eval-only: the test loader loads the test set)."""
    root, good, images = shapes
    broken = tmp_path / f"{split}.json"
    message = _duplicate_image_id(good, broken)
    if split == "train":
        last_line = _run(root, broken, good, images)
    else:
        last_line = _run(root, good, broken, images, "--eval-only")
    name = "my_train" if split == "train" else "my_val"
    assert last_line == "retina_plugin.data.coco_json.DatasetLoadError: " + message.format(name)


def test_file_name_keys_counted_across_chunks(tmp_path):
    """The byte scan that spares a good json a second parse finds "file_name" (key or value: a
    count above the records only leads to a parse) also where it spans two chunks."""
    from retina_plugin.data.coco_json import _count

    path = tmp_path / "a.json"
    path.write_bytes(b'{"file_name": 1, "file_name": 2, "x": "file_name", "file_name"}')
    assert [_count(str(path), b'"file_name"', chunk_size=n) for n in (3, 7, 11, 64)] == [4] * 4
