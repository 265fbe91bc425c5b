"""The demo's logic (retina_plugin/demo.py): which files it reads, the COCO results it writes, the
ground truth it finds for an image, and tools/demo.py on an untrained model with ground truth.
tools/demo.py on a trained model runs in tests/engine/test_train_net.py."""

import json
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from retina_plugin.demo import GroundTruth, detections_to_coco, list_images, load_ground_truth
from retina_plugin.visualization import MUTED_COLOR, add_caption
from tests.utils import QUICKSTART, REPO_ROOT, generate_tiny_shapes, tiny_shapes_overrides


def test_list_images_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        list_images([str(tmp_path / "nowhere")])
    assert (
        str(error.value) == f"--input {str(tmp_path / 'nowhere')!r} is neither a file nor a folder."
    )


def test_list_images_of_files_and_folders(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b.JPG", "a.png", "notes.txt", "c.webp"):  # sorted; extensions in any case
        (folder / name).write_bytes(b"")
    named = tmp_path / "named.dat"  # a file named on the command line is taken as it is
    named.write_bytes(b"")
    assert list_images([str(named), str(folder)]) == [
        str(named),
        *(str(folder / n) for n in ("a.png", "b.JPG", "c.webp")),
    ]


def test_detections_to_coco():
    instances = Instances((20, 30))
    instances.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 11.0, 7.0], [0.0, 0.0, 3.0, 4.0]]))
    instances.scores = torch.tensor([0.75, 0.5])
    instances.pred_classes = torch.tensor([0, 2])
    assert detections_to_coco(instances, "img.png", {0: 7}) == [
        {"file_name": "img.png", "category_id": 7, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.75},
        {"file_name": "img.png", "category_id": 2, "bbox": [0.0, 0.0, 3.0, 4.0], "score": 0.5},
    ]
    assert detections_to_coco(instances[:0], "img.png", {0: 7}) == []


def _record(file_name, height=64, width=96):
    return {"file_name": file_name, "height": height, "width": width, "annotations": []}


def test_ground_truth_found_by_path_then_by_unique_name(tmp_path):
    records = [_record(str(tmp_path / "a" / "x.png")), _record(str(tmp_path / "a" / "y.png"))]
    records.append(_record(str(tmp_path / "b" / "y.png")))
    truth = GroundTruth(records, metadata=None)
    shape = (64, 96, 3)
    assert truth.find(str(tmp_path / "a" / "." / "y.png"), shape) is records[1]  # same file
    assert truth.find(str(tmp_path / "copies" / "x.png"), shape) is records[0]  # copied
    assert truth.find(str(tmp_path / "copies" / "y.png"), shape) is None  # two y.png: which?
    assert truth.find(str(tmp_path / "copies" / "z.png"), shape) is None
    assert truth.find(str(tmp_path / "a" / "x.png"), (96, 64, 3)) is None  # another size


def test_ground_truth_from_a_json_file(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "x.png", "height": 64, "width": 96}],
        "annotations": [
            {
                "id": 5,
                "image_id": 1,
                "category_id": 3,
                "bbox": [1, 2, 10, 20],
                "area": 200.0,
                "iscrowd": 0,
            },
        ],  # fmt: skip
        "categories": [{"id": 3, "name": "kite"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    truth = load_ground_truth(str(tmp_path / "gt.json"))
    record = truth.find(str(tmp_path / "elsewhere" / "x.png"), (64, 96, 3))
    assert record["file_name"] == str(tmp_path / "x.png")
    assert [a["bbox"] for a in record["annotations"]] == [[1, 2, 10, 20]]
    assert truth.metadata.thing_classes == ["kite"]


def test_ground_truth_unknown():
    with pytest.raises(ValueError) as error:
        load_ground_truth("no_such_dataset")
    assert str(error.value) == (
        "--ground-truth 'no_such_dataset' is neither a COCO json file nor a registered dataset "
        "(those of the config's DATASETS are registered)."
    )


def test_demo_of_an_untrained_model_with_ground_truth(tmp_path):
    """tools/demo.py as a user runs it on a model that has not learnt yet (random weights): no
    score reaches 0.5, so each picture shows the best 3 in grey; an image of shapes_val is drawn
    beside its ground truth, another image alone."""
    shapes = tmp_path / "shapes"
    generate_tiny_shapes(shapes)
    val_dir = next(p for p in shapes.iterdir() if p.name.startswith("shapes_val"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(val_dir / "images" / "000001.png", inputs / "000001.png")  # found by its name
    shutil.copy(val_dir / "images" / "000002.png", inputs / "photo.png")  # not in shapes_val
    done = subprocess.run(
        [
            sys.executable, "tools/demo.py", "--config-file", QUICKSTART,
            "--input", str(inputs), "--output", str(tmp_path / "out"),
            "--ground-truth", "shapes_val",
            "--opts", *tiny_shapes_overrides(shapes), "MODEL.DEVICE", "cpu",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    with open(tmp_path / "out" / "detections.json") as f:
        assert max(d["score"] for d in json.load(f)) < 0.5
    with open(val_dir / "annotations.json") as f:
        coco = json.load(f)
    (image_id,) = [i["id"] for i in coco["images"] if i["file_name"].endswith("000001.png")]
    gt_boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id]
    assert re.search(rf"000001\.png: \d+ detections, {len(gt_boxes)} ground-truth boxes", log)
    assert re.search(r"photo\.png: \d+ detections\n", log)

    band, scale = 32, 8  # 64 px images drawn at 512 px, under add_caption's band
    with_truth = cv2.imread(str(tmp_path / "out" / "000001.png"))[:, :, ::-1]
    alone = cv2.imread(str(tmp_path / "out" / "photo.png"))[:, :, ::-1]
    assert with_truth.shape == (band + 512, 2 * 512, 3)  # ground truth | predictions
    assert alone.shape == (band + 512, 512, 3)
    image = cv2.imread(str(inputs / "000001.png"))[:, :, ::-1]
    enlarged = cv2.resize(image, (512, 512), interpolation=cv2.INTER_NEAREST).astype(int)
    for x, y, w, h in gt_boxes:  # each box's bottom edge, drawn over the image
        x0, y1, x1 = round(x * scale), round((y + h) * scale), round((x + w) * scale)
        drawn = with_truth[band + y1 - 1 : band + y1 + 1, x0 + 4 : x1 - 4].astype(int)
        differs = np.abs(drawn - enlarged[y1 - 1 : y1 + 1, x0 + 4 : x1 - 4]).sum(axis=2) > 30
        assert differs.any(axis=0).mean() > 0.9
    muted = np.round(np.array(MUTED_COLOR) * 255)
    for panel in (with_truth[band:, 512:], alone[band:]):  # the best 3, in grey
        assert (panel == muted).all(axis=2).sum() > (enlarged == muted).all(axis=2).sum() + 500
    caption = add_caption(np.zeros((1, 512, 3), np.uint8), "none >= 0.50; best 3 shown")
    assert (with_truth[:band, 512:] == caption[:band]).all()
    assert (alone[:band] == caption[:band]).all()
