"""The synthetic shapes dataset: determinism, COCO validity, difficulty, caching, registration."""

import hashlib
import itertools
import json
import os
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

from retina_plugin.data import (
    SHAPES_CLASSES,
    default_shapes_root,
    generate_shapes_split,
    register_shapes_datasets,
)

SMALL = dict(num_images=12, image_size=96, seed=0)


def _digests(json_file, image_root):
    """sha256 of the json and of every image, by file name."""
    out = {"json": hashlib.sha256(open(json_file, "rb").read()).hexdigest()}
    for name in sorted(os.listdir(image_root)):
        with open(os.path.join(image_root, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _iou(a, b):
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """60 images of 128 px: big enough to see the dataset's spread, small enough to be fast."""
    json_file, _ = generate_shapes_split(
        str(tmp_path_factory.mktemp("shapes")), "train", 60, image_size=128, seed=0
    )
    with open(json_file) as f:
        return json.load(f)


def test_generation_is_byte_identical_across_runs(tmp_path):
    a = _digests(*generate_shapes_split(str(tmp_path / "a"), "train", **SMALL))
    b = _digests(*generate_shapes_split(str(tmp_path / "b"), "train", **SMALL))
    assert len(a) == SMALL["num_images"] + 1
    assert a == b
    # Another seed, or the other split, gives other images.
    c = _digests(*generate_shapes_split(str(tmp_path / "c"), "train", **{**SMALL, "seed": 1}))
    v = _digests(*generate_shapes_split(str(tmp_path / "a"), "val", **SMALL))
    for other in (c, v):
        assert all(a[name] != other[name] for name in a if name != "json")


def test_split_folder_is_named_after_its_parameters(tmp_path):
    json_file, image_root = generate_shapes_split(str(tmp_path), "val", 5, image_size=64, seed=3)
    folder = tmp_path / "shapes_val-5x64-seed3"
    assert json_file == str(folder / "annotations.json")
    assert image_root == str(folder / "images")
    assert sorted(os.listdir(image_root)) == [f"{i:06d}.png" for i in range(5)]
    # Only the finished folder is left: no temporary folder.
    assert sorted(os.listdir(tmp_path)) == ["shapes_val-5x64-seed3"]


def test_json_is_valid_coco(tmp_path):
    json_file, image_root = generate_shapes_split(str(tmp_path), "val", **SMALL)
    coco = COCO(json_file)
    cat_ids = sorted(coco.getCatIds())
    assert len(cat_ids) >= 6
    assert cat_ids == list(range(1, len(SHAPES_CLASSES) + 1))
    assert [coco.cats[i]["name"] for i in cat_ids] == SHAPES_CLASSES
    assert sorted(coco.getImgIds()) == list(range(1, SMALL["num_images"] + 1))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) > SMALL["num_images"]
    # COCOeval needs ann ids >= 1 (id 0 reads as "unmatched").
    assert sorted(a["id"] for a in anns) == list(range(1, len(anns) + 1))
    for ann in anns:
        img = coco.imgs[ann["image_id"]]
        assert (img["width"], img["height"]) == (96, 96)
        x, y, w, h = ann["bbox"]
        assert all(isinstance(v, float) for v in ann["bbox"])
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] and y + h <= img["height"]
        assert ann["category_id"] in cat_ids and ann["iscrowd"] == 0
        # The area is the shape's pixel count: positive, at most its box.
        assert 0 < ann["area"] <= w * h
    for img in coco.imgs.values():
        assert os.path.isfile(os.path.join(image_root, img["file_name"]))


def test_sample_is_a_dense_detection_problem(sample):
    boxes = np.array([a["bbox"] for a in sample["annotations"]])
    sizes = np.sqrt(boxes[:, 2] * boxes[:, 3])
    aspect = boxes[:, 2] / boxes[:, 3]
    assert sizes.min() < 16 and np.maximum(boxes[:, 2], boxes[:, 3]).max() > 64
    assert (aspect < 0.6).any() and (aspect > 1.6).any()

    per_image = {img["id"]: [] for img in sample["images"]}
    for ann in sample["annotations"]:
        per_image[ann["image_id"]].append(ann)
    counts = [len(v) for v in per_image.values()]
    assert min(counts) == 0, "some images must hold no objects"
    assert max(counts) >= 6, "some images must be crowded"
    assert any(
        _iou(a["bbox"], b["bbox"]) > 0
        for anns in per_image.values()
        for a, b in itertools.combinations(anns, 2)
    ), "some boxes must overlap"

    freq = np.bincount([a["category_id"] for a in sample["annotations"]], minlength=9)[1:]
    assert (freq > 0).all(), "every class occurs"
    # Uneven frequencies: the commonest class (circle) is far more frequent than the rarest.
    assert freq[0] == freq.max() and freq.max() >= 2 * freq.min()


@pytest.mark.parametrize(
    "damage", ["stale_tmp_folder", "no_marker", "missing_image", "empty_image", "wrong_marker"]
)
def test_interrupted_generation_is_detected_and_regenerated(tmp_path, damage):
    reference = _digests(*generate_shapes_split(str(tmp_path / "ref"), "train", **SMALL))
    root = tmp_path / "cache"
    json_file, image_root = generate_shapes_split(str(root), "train", **SMALL)
    folder = os.path.dirname(json_file)
    if damage == "stale_tmp_folder":
        # A run killed before its rename: the target was never created. A pid that cannot be
        # alive marks the temporary folder as left behind.
        os.rename(folder, f"{folder}.tmp-999999999")
    elif damage == "no_marker":
        os.remove(os.path.join(folder, "COMPLETE"))
    elif damage == "missing_image":
        os.remove(os.path.join(image_root, "000007.png"))
    elif damage == "empty_image":
        open(os.path.join(image_root, "000003.png"), "wb").close()
    elif damage == "wrong_marker":
        with open(os.path.join(folder, "COMPLETE"), "w") as f:
            json.dump({"generator_version": 1, "num_images": 11}, f)
    assert generate_shapes_split(str(root), "train", **SMALL) == (json_file, image_root)
    assert _digests(json_file, image_root) == reference
    assert sorted(os.listdir(root)) == [os.path.basename(folder)]


def test_generation_interrupted_midway_leaves_nothing_taken_for_whole(tmp_path, monkeypatch):
    import cv2

    from retina_plugin.data import shapes

    real_imwrite, calls = cv2.imwrite, []

    def imwrite_then_interrupt(*args):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_imwrite(*args)

    monkeypatch.setattr(shapes.cv2, "imwrite", imwrite_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_split(str(tmp_path), "train", **SMALL)
    # The images were being written into the temporary folder, which is gone; no target exists.
    assert all(".tmp-" in os.path.dirname(os.path.dirname(c)) for c in calls)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(shapes.cv2, "imwrite", real_imwrite)
    json_file, image_root = generate_shapes_split(str(tmp_path), "train", **SMALL)
    assert len(os.listdir(image_root)) == SMALL["num_images"]


def test_complete_split_is_not_regenerated(tmp_path):
    json_file, image_root = generate_shapes_split(str(tmp_path), "val", **SMALL)
    sentinel = os.path.join(os.path.dirname(json_file), "sentinel")
    open(sentinel, "w").close()
    mtime = os.stat(json_file).st_mtime_ns
    assert generate_shapes_split(str(tmp_path), "val", **SMALL) == (json_file, image_root)
    assert os.path.exists(sentinel) and os.stat(json_file).st_mtime_ns == mtime


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "", "num_images": 4},
        {"split": "../x", "num_images": 4},
        {"split": "val", "num_images": 0},
        {"split": "val", "num_images": 4, "image_size": 16},
        {"split": "val", "num_images": 4, "seed": -1},
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_shapes_split(str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RETINA_PLUGIN_DATASETS", str(tmp_path))
    assert default_shapes_root() == os.path.join(str(tmp_path), "shapes")
    monkeypatch.delenv("RETINA_PLUGIN_DATASETS")
    assert default_shapes_root() == os.path.expanduser("~/.cache/retina_plugin/shapes")


@pytest.fixture
def names():
    """Unique dataset names, unregistered afterwards so tests do not interfere."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"test_shapes_train_{suffix}", f"test_shapes_val_{suffix}")
    yield names
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


def test_registration(tmp_path, names):
    train, val = names
    kwargs = dict(root=str(tmp_path), num_train=8, num_val=6, image_size=96, seed=0, names=names)
    paths = register_shapes_datasets(**kwargs)
    assert set(paths) == {train, val}
    # The metadata is usable before the dataset is loaded, as COCOEvaluator and models need.
    meta = MetadataCatalog.get(val)
    assert meta.thing_classes == SHAPES_CLASSES
    assert meta.evaluator_type == "coco"
    assert meta.json_file == paths[val][0] and os.path.isfile(meta.json_file)
    assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(len(SHAPES_CLASSES))}

    dicts = DatasetCatalog.get(val)
    assert len(dicts) == 6 and len(DatasetCatalog.get(train)) == 8
    with open(meta.json_file) as f:
        raw = json.load(f)
    by_image = {}
    for ann in raw["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and (d["height"], d["width"]) == (96, 96)
        expected = by_image.get(d["image_id"], [])
        assert [a["category_id"] for a in d["annotations"]] == [
            a["category_id"] - 1 for a in expected
        ]
        for a in d["annotations"]:
            assert 0 <= a["category_id"] < len(SHAPES_CLASSES)
            assert a["bbox_mode"] == BoxMode.XYWH_ABS
    assert MetadataCatalog.get(val).thing_classes == SHAPES_CLASSES  # unchanged by loading

    # Registering again is a no-op; other parameters re-register the names to the new files.
    assert register_shapes_datasets(**kwargs) == paths
    new_paths = register_shapes_datasets(**{**kwargs, "num_val": 4})
    assert new_paths[val] != paths[val] and new_paths[train] == paths[train]
    assert MetadataCatalog.get(val).json_file == new_paths[val][0]
    assert len(DatasetCatalog.get(val)) == 4


def test_coco_evaluator_scores_ground_truth_as_perfect(tmp_path, names):
    """The json works with Detectron2's COCOEvaluator unchanged: the ground truth scores AP 100."""
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    register_shapes_datasets(str(tmp_path), num_train=2, num_val=8, image_size=96, names=names)
    val = names[1]
    evaluator = COCOEvaluator(val, tasks=("bbox",), distributed=False, use_fast_impl=False)
    evaluator.reset()
    for d in DatasetCatalog.get(val):
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]
        ]
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.ones(len(boxes))
        instances.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]]).long()
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
