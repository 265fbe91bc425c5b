"""Bad data: COCO json checks, box sanitising, datasets emptied by filtering, category-id mapping
through evaluation, range checks of the data keys, and a bad image met by a data-loader worker
during a real train_net run. Every bad file is generated here."""

import gc
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from retina_plugin import add_retina_plugin_config
from retina_plugin.data import (
    CocoJsonError,
    EmptyDatasetError,
    ImageReadError,
    build_train_loader,
    load_checked_coco_json,
    load_train_datasets,
    register_datasets_from_config,
    sanitize_boxes,
)
from tests.data_files import coco_dict, truncate, write_coco_dataset, write_image, write_json
from tests.utils import QUICKSTART, REPO_ROOT, run_main, tiny_overrides


def data_config(*train_names, **coco):
    """Detectron2's defaults + ours, training on `train_names`; `coco` = {name: (json, root)}."""
    cfg = get_cfg()
    add_retina_plugin_config(cfg)
    cfg.DATASETS.FOCAL_RETINA.COCO = [[name, *files] for name, files in coco.items()]
    cfg.DATASETS.TRAIN = train_names
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0  # the build machine has 2 cores
    return cfg


@pytest.fixture
def register():
    """register(name, json_file, image_root) through the config, as train_net does; the names
    are removed from Detectron2's catalogs afterwards."""
    names = []

    def register_dataset(name, json_file, image_root):
        register_datasets_from_config(data_config(**{name: (json_file, image_root)}))
        names.append(name)
        return name

    yield register_dataset
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def plugin_logs(caplog, monkeypatch):
    """caplog at INFO, also for "retina_plugin" records (train_net's logger set-up stops them at
    its own handlers)."""
    monkeypatch.setattr(logging.getLogger("retina_plugin"), "propagate", True)
    caplog.set_level(logging.INFO)
    return caplog


def three_images(tmp_path, category_ids=(1, 2, 3)):
    """A json dict of three 64 px images (files not written) and a box of each class."""
    images = [(i, f"{i}.png", 64, 64) for i in (1, 2, 3)]
    boxes = [(1, 1, category_ids[0], [4, 4, 20, 20]), (2, 2, category_ids[1], [8, 8, 30, 10])]
    boxes.append((3, 3, category_ids[2], [1, 2, 3, 4]))
    return coco_dict(images, boxes, category_ids)


# ------------------------------------------------------------------------------------------------
# COCO json
# ------------------------------------------------------------------------------------------------


def test_missing_json_file(tmp_path):
    missing = str(tmp_path / "gone.json")
    with pytest.raises(FileNotFoundError) as error:
        load_checked_coco_json(missing, str(tmp_path), "my_data")
    assert (
        str(error.value) == f"The COCO json file {missing!r} of dataset 'my_data' does not exist."
    )


def test_malformed_json_names_path_line_and_column(tmp_path):
    json_file = write_json(tmp_path / "bad.json", '{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(CocoJsonError) as error:
        load_checked_coco_json(json_file, str(tmp_path), "my_data")
    assert str(error.value) == (
        f"{json_file} is not valid JSON: Expecting property name enclosed in double quotes at "
        "line 2, column 12."
    )


def test_unknown_category_names_annotation_image_and_category(tmp_path):
    content = three_images(tmp_path)
    content["annotations"][1]["category_id"] = 7
    content["annotations"][2]["category_id"] = 8
    json_file = write_json(tmp_path / "train.json", content)
    with pytest.raises(CocoJsonError) as error:
        load_checked_coco_json(json_file, str(tmp_path), "my_data")
    assert str(error.value) == (
        f"{json_file}: annotation 2 (image 2) has category_id 7, which is not in 'categories' "
        "(ids [1, 2, 3]) (1 more annotations too). Add the category or fix the annotation."
    )


def test_duplicate_annotation_ids_are_named(tmp_path):
    content = three_images(tmp_path)
    for annotation in content["annotations"]:
        annotation["id"] = 5
    json_file = write_json(tmp_path / "train.json", content)
    with pytest.raises(CocoJsonError) as error:
        load_checked_coco_json(json_file, str(tmp_path), "my_data")
    assert str(error.value) == (
        f"{json_file}: annotation ids must be unique, but 1 ids occur more than once: 5. "
        "Give every annotation its own id."
    )


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda c: c["images"][1].pop("height"),
            "images[1] (id 2) has no 'height'; each entry of 'images' needs id, file_name, "
            "width, height.",
        ),
        (
            lambda c: c["categories"].clear(),
            """'categories' is empty; list every class as {"id": <int>, "name": <str>}.""",
        ),
        (lambda c: c.pop("categories"), "has no 'categories' list."),
    ],
)
def test_structural_problems_are_named(tmp_path, break_it, message):
    content = three_images(tmp_path)
    break_it(content)
    json_file = write_json(tmp_path / "train.json", content)
    with pytest.raises(CocoJsonError) as error:
        load_checked_coco_json(json_file, str(tmp_path), "my_data")
    separator = " " if message.startswith("has no") else ": "
    assert str(error.value) == f"{json_file}{separator}{message}"


def test_bbox_that_is_not_four_numbers(tmp_path):
    content = three_images(tmp_path)
    content["annotations"][0]["bbox"] = [1, 2, 3]
    json_file = write_json(tmp_path / "train.json", content)
    with pytest.raises(CocoJsonError) as error:
        load_checked_coco_json(json_file, str(tmp_path), "my_data")
    assert str(error.value) == (
        f"{json_file}: annotation 1 (image 1) has bbox [1, 2, 3]; it must be [x, y, width, height]."
    )


def test_json_without_images(tmp_path):
    json_file = write_json(tmp_path / "train.json", coco_dict([], []))
    with pytest.raises(CocoJsonError) as error:
        load_checked_coco_json(json_file, str(tmp_path), "my_data")
    assert str(error.value) == (
        f"{json_file} lists no images, so dataset 'my_data' is empty. Add the images to its "
        "'images' list, or remove the dataset from DATASETS.TRAIN / DATASETS.TEST."
    )


def test_config_registered_dataset_uses_the_checking_loader(tmp_path, register):
    content = three_images(tmp_path)
    content["annotations"][0]["category_id"] = 4
    json_file = write_json(tmp_path / "train.json", content)
    register("checked_via_config", json_file, str(tmp_path))
    with pytest.raises(CocoJsonError, match=r"annotation 1 \(image 1\) has category_id 4"):
        DatasetCatalog.get("checked_via_config")
    metadata = MetadataCatalog.get("checked_via_config")
    assert (metadata.json_file, metadata.evaluator_type) == (json_file, "coco")


def test_images_without_annotations_follow_filter_empty_annotations(
    tmp_path, register, plugin_logs
):
    json_file, image_root = write_coco_dataset(
        tmp_path, [[(1, [4, 4, 20, 20])], [], [(2, [8, 8, 30, 10])], []]
    )
    register("with_empty_images", json_file, image_root)
    cfg = data_config("with_empty_images")
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    kept = load_train_datasets(cfg)["with_empty_images"]
    assert [r["image_id"] for r in kept] == [1, 3]
    assert (
        f"{json_file}: 2 of 4 images have no annotations. Training drops them when "
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS is True (Detectron2's default) and keeps them as "
        "background when it is False; evaluation keeps them." in plugin_logs.text
    )
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    kept = load_train_datasets(cfg)["with_empty_images"]
    assert [r["image_id"] for r in kept] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------
# Boxes
# ------------------------------------------------------------------------------------------------


def test_sanitize_boxes_counts_each_reason(plugin_logs):
    nan, inf = float("nan"), float("inf")
    xywh = [
        [4, 5, 10, 10],  # kept as it is
        [4, 5, 0, 10],  # zero width
        [4, 5, 10, -3],  # negative height
        [nan, 5, 10, 10],
        [4, 5, inf, 10],
        [4, None, 10, 10],  # null in the json
        [-6, 50, 20, 30],  # partly outside: left and bottom
        [64, 10, 5, 5],  # wholly outside: starts at the right edge
        [-20, -20, 20, 10],  # wholly outside: ends at the left edge
    ]
    xyxy = [[-1.5, 2, 30, 70], [10, 10, 10, 20]]  # clipped; zero width
    record = {"image_id": 1, "width": 64, "height": 60, "file_name": "a.png"}
    record["annotations"] = [{"bbox": b, "bbox_mode": BoxMode.XYWH_ABS} for b in xywh]
    record["annotations"] += [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS} for b in xyxy]
    no_size = {"image_id": 2, "annotations": [{"bbox": [100, 100, 5, 5], "bbox_mode": 1}]}
    records = [record, no_size]
    original = json.dumps(records)

    sanitized, counts = sanitize_boxes(records, "toy")

    assert [a["bbox"] for a in sanitized[0]["annotations"]] == [
        [4, 5, 10, 10],
        [0.0, 50.0, 14.0, 10.0],
        [0.0, 2.0, 30.0, 60.0],
    ]
    assert sanitized[1]["annotations"] == no_size["annotations"]  # no size: not clipped
    assert sanitized[0]["annotations"][0] is record["annotations"][0]  # unchanged: same values
    assert json.dumps(records) == original  # the input records are left as they were
    assert (counts.non_finite, counts.degenerate, counts.outside, counts.clipped) == (3, 3, 2, 2)
    assert (
        "Dataset 'toy': 2 images, 12 boxes; dropped 3 with non-finite coordinates, 3 with zero "
        "or negative width or height, 2 wholly outside the image; clipped 2 partly outside the "
        "image; kept 4." in plugin_logs.text
    )


def test_train_loader_drops_images_left_without_boxes(tmp_path, register, plugin_logs):
    boxes = [
        [(1, [4, 4, 20, 20])],
        [(1, [10, 10, 0, 5])],  # only a degenerate box: dropped, then the image
        [(2, [50, 40, 30, 40])],  # clipped to [50, 40, 14, 24]
    ]
    json_file, image_root = write_coco_dataset(tmp_path, boxes)
    register("some_bad_boxes", json_file, image_root)
    cfg = data_config("some_bad_boxes")
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.ASPECT_RATIO_GROUPING = 2, False
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP = (64,), 64, "none"
    batch = next(iter(build_train_loader(cfg)))
    by_id = {x["image_id"]: x["instances"].gt_boxes.tensor.tolist() for x in batch}
    seen = {1: [[4.0, 4.0, 24.0, 24.0]], 3: [[50.0, 40.0, 64.0, 64.0]]}
    assert by_id == {i: seen[i] for i in by_id}  # image 2 never comes
    assert "Dataset 'some_bad_boxes': 3 images, 3 boxes; dropped 0 with non-finite " in (
        plugin_logs.text
    )
    assert "Removed 1 images with no usable annotations. 2 images left." in plugin_logs.text


def test_datasets_registered_in_python_are_sanitised_too(plugin_logs):
    def xyxy_records():
        box = {"bbox": [-5.0, 0.0, 20.0, 10.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
        return [
            {"file_name": "x.png", "image_id": 0, "width": 16, "height": 16, "annotations": [box]}
        ]

    DatasetCatalog.register("python_xyxy", xyxy_records)
    try:
        records = load_train_datasets(data_config("python_xyxy"))["python_xyxy"]
    finally:
        DatasetCatalog.remove("python_xyxy")
    assert records[0]["annotations"][0]["bbox"] == [0.0, 0.0, 16.0, 10.0]
    assert (
        "Dataset 'python_xyxy': 1 images, 1 boxes; dropped 0 with non-finite coordinates, 0 "
        in (plugin_logs.text)
    )


def test_shapes_train_is_sanitised_with_nothing_to_drop(tmp_path, plugin_logs):
    cfg = data_config("shapes_train")
    shapes = cfg.DATASETS.FOCAL_RETINA.SHAPES
    shapes.ROOT, shapes.NUM_TRAIN, shapes.NUM_VAL, shapes.IMAGE_SIZE = str(tmp_path), 6, 1, 32
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    register_datasets_from_config(cfg)
    records = load_train_datasets(cfg)["shapes_train"]
    num_boxes = sum(len(r["annotations"]) for r in records)
    assert num_boxes > 0
    assert (
        f"Dataset 'shapes_train': 6 images, {num_boxes} boxes; dropped 0 with non-finite "
        "coordinates, 0 with zero or negative width or height, 0 wholly outside the image; "
        f"clipped 0 partly outside the image; kept {num_boxes}." in plugin_logs.text
    )


def test_dataset_registered_as_a_torch_dataset_is_refused():
    DatasetCatalog.register("torch_dataset", lambda: torch.utils.data.TensorDataset(torch.ones(2)))
    try:
        with pytest.raises(TypeError) as error:
            load_train_datasets(data_config("torch_dataset"))
    finally:
        DatasetCatalog.remove("torch_dataset")
    assert str(error.value) == (
        "Training dataset 'torch_dataset' is a TensorDataset, not a list of records: "
        "retina-plugin checks the boxes of each record before training, so register a function "
        "that returns list[dict] (Detectron2's dataset format)."
    )


def test_dataset_empty_after_filtering_names_each_dataset_and_why(tmp_path, register):
    good_json, good_root = write_coco_dataset(tmp_path / "good", [[(1, [4, 4, 20, 20])]])
    bad_json, bad_root = write_coco_dataset(
        tmp_path / "bad", [[(1, [4, 4, 0, 20]), (2, [float("nan"), 4, 5, 5])], [(3, [70, 0, 5, 5])]]
    )
    crowd_json, crowd_root = write_coco_dataset(tmp_path / "crowd", [[(1, [4, 4, 20, 20])]])
    content = json.load(open(crowd_json))
    content["annotations"][0]["iscrowd"] = 1
    write_json(crowd_json, content)
    register("good_boxes", good_json, good_root)
    register("bad_boxes", bad_json, bad_root)
    register("crowd_only", crowd_json, crowd_root)
    with pytest.raises(EmptyDatasetError) as error:
        load_train_datasets(data_config("good_boxes", "bad_boxes", "crowd_only"))
    assert str(error.value) == (
        f"Training dataset 'bad_boxes' ({bad_json}) is empty after filtering: none of its 2 "
        "images has a usable box (not crowd, finite, of positive width and height, not wholly "
        "outside the image; of its 3 boxes, dropped 1 with non-finite coordinates, 1 with zero or "
        "negative width or height, 1 wholly outside the image), and "
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS is True, which removes images without one.\n"
        f"Training dataset 'crowd_only' ({crowd_json}) is empty after filtering: none of its 1 "
        "images has a usable box (not crowd, finite, of positive width and height, not wholly "
        "outside the image; of its 1 boxes, dropped 0 with non-finite coordinates, 0 with zero or "
        "negative width or height, 0 wholly outside the image), and "
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS is True, which removes images without one.\n"
        "Fix the boxes, or set DATALOADER.FILTER_EMPTY_ANNOTATIONS False to train on images "
        "without boxes as background only."
    )
    cfg = data_config("good_boxes", "bad_boxes")
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert [len(d) for d in load_train_datasets(cfg).values()] == [1, 2]


@pytest.mark.parametrize("exact_resume", [True, False])
@pytest.mark.parametrize("sampler", ["WeightedTrainingSampler", "WeightedCategoryTrainingSampler"])
def test_weighted_samplers_see_the_filtered_datasets(tmp_path, register, sampler, exact_resume):
    json_a, root_a = write_coco_dataset(
        tmp_path / "a", [[(1, [4, 4, 20, 20])], [(2, [9, 9, 0, 9])]]
    )
    json_b, root_b = write_coco_dataset(tmp_path / "b", [[(2, [4, 4, 20, 20])]] * 3)
    register("weighted_a", json_a, root_a)
    register("weighted_b", json_b, root_b)
    cfg = data_config("weighted_a", "weighted_b")
    cfg.DATALOADER.SAMPLER_TRAIN = sampler
    cfg.DATALOADER.FOCAL_RETINA.EXACT_RESUME = exact_resume
    cfg.DATASETS.TRAIN_REPEAT_FACTOR = [["weighted_a", 3.0]]
    cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = 2, (64,), 64
    loader = build_train_loader(cfg)
    # Image 2 of "weighted_a" was dropped: 1 + 3 images. Each image of "weighted_a" is repeated
    # 3 times; the category factors are 1 here (every class is in at least half the images).
    # ResumableBatchStream's sampler, or the one inside Detectron2's loader.
    sampler = loader.dataset.sampler if exact_resume else loader.dataset.dataset.sampler
    factors = sampler._int_part + sampler._frac_part
    assert factors.tolist() == [3.0, 1.0, 1.0, 1.0]
    assert all(len(x) == 2 for x in itertools_first(loader, 2))


def itertools_first(loader, n):
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


# ------------------------------------------------------------------------------------------------
# Category ids: mapped for training, mapped back by COCOEvaluator
# ------------------------------------------------------------------------------------------------


def _evaluate(records, name, shift_class):
    """COCOEvaluator's AP for predictions equal to the ground truth, except that the boxes of
    contiguous class `shift_class` (-1: none) are moved by half their size."""
    evaluator = COCOEvaluator(name, tasks=("bbox",), output_dir=None)
    evaluator.reset()
    for record in records:
        boxes = torch.tensor(
            [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in record["annotations"]
            ]
        ).reshape(-1, 4)
        classes = torch.tensor([a["category_id"] for a in record["annotations"]], dtype=torch.int64)
        shift = (boxes[:, 2:] - boxes[:, :2]) / 2 * (classes == shift_class)[:, None]
        instances = Instances((record["height"], record["width"]))
        instances.pred_boxes = Boxes(boxes + shift.repeat(1, 2))
        instances.scores = torch.linspace(0.9, 0.5, len(boxes))
        instances.pred_classes = classes
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]


@pytest.mark.parametrize("shift_class, expected_ap", [(-1, 100.0), (2, 200 / 3)])
def test_non_contiguous_and_zero_based_category_ids_keep_ap(
    tmp_path, register, shift_class, expected_ap
):
    boxes = [
        [(0, [4, 4, 20, 20]), (1, [30, 30, 20, 12])],
        [(2, [8, 8, 30, 10]), (0, [40, 2, 10, 30])],
        [(1, [10, 20, 30, 30]), (2, [2, 40, 12, 12])],
    ]
    results = {}
    for ids in ((1, 2, 3), (0, 5, 9)):
        by_index = [[(ids[c], b) for c, b in image] for image in boxes]
        json_file, image_root = write_coco_dataset(
            tmp_path / str(ids[0]), by_index, category_ids=ids
        )
        name = register(f"ids_from_{ids[0]}_{shift_class}", json_file, image_root)
        records = DatasetCatalog.get(name)
        assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {
            ids[0]: 0,
            ids[1]: 1,
            ids[2]: 2,
        }
        assert sorted({a["category_id"] for r in records for a in r["annotations"]}) == [0, 1, 2]
        results[ids] = _evaluate(records, name, shift_class)
    assert results[(1, 2, 3)]["AP"] == pytest.approx(expected_ap)
    # Same numbers, overall and per class; per-class entries are named by the json's classes.
    assert list(results[(0, 5, 9)]) == [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AP-class0", "AP-class5", "AP-class9"
    ]  # fmt: skip
    assert list(results[(1, 2, 3)].values()) == pytest.approx(
        list(results[(0, 5, 9)].values()), nan_ok=True
    )


# ------------------------------------------------------------------------------------------------
# Range checks of the data keys
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "NUM_TRAIN",
            0,
            "DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN = 0 is out of range: it must be >= 1.",
        ),
        (
            "NUM_VAL",
            -3,
            "DATASETS.FOCAL_RETINA.SHAPES.NUM_VAL = -3 is out of range: it must be >= 1.",
        ),
        (
            "IMAGE_SIZE",
            31,
            "DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE = 31 is out of range: it must be >= 32.",
        ),
        ("SEED", -1, "DATASETS.FOCAL_RETINA.SHAPES.SEED = -1 is out of range: it must be >= 0."),
        ("NUM_TRAIN", 2.5, "DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN = 2.5 must be an integer >= 1."),
    ],
)
def test_shapes_keys_out_of_range(tmp_path, key, value, message):
    cfg = data_config()
    cfg.DATASETS.FOCAL_RETINA.SHAPES.ROOT = str(tmp_path)
    cfg.DATASETS.FOCAL_RETINA.SHAPES[key] = value
    with pytest.raises(ValueError) as error:
        register_datasets_from_config(cfg)
    assert str(error.value) == message
    assert list(tmp_path.iterdir()) == []  # nothing generated


def test_shapes_keys_checked_by_train_net_before_anything_runs(tmp_path):
    args = default_argument_parser().parse_args(
        ["--config-file", QUICKSTART, "DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE", "16",
         "DATASETS.FOCAL_RETINA.SHAPES.ROOT", str(tmp_path / "shapes"), "OUTPUT_DIR", str(tmp_path / "out")]
    )  # fmt: skip
    with pytest.raises(ValueError) as error:
        run_main(args)
    assert str(error.value) == (
        "DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE = 16 is out of range: it must be >= 32."
    )
    assert not (tmp_path / "shapes").exists()


# ------------------------------------------------------------------------------------------------
# A bad image inside a data-loader worker, during train_net training
# ------------------------------------------------------------------------------------------------


def truncated_dataset_overrides(tmp_path):
    """train_net overrides: a tiny training (2 data-loader workers) on 5 JPEGs, one truncated.
    Returns (overrides, the truncated file)."""
    boxes = [[(1, [8, 8, 24, 24])]] * 5
    json_file, image_root = write_coco_dataset(tmp_path / "data", boxes, ext="jpg")
    bad = truncate(f"{image_root}/003.jpg", keep=0.4)
    overrides = tiny_overrides(tmp_path / "shapes", tmp_path / "out", max_iter=50)
    overrides += [
        "DATASETS.FOCAL_RETINA.COCO", f"[['truncated_train', '{json_file}', '{image_root}']]",
        "DATASETS.TRAIN", "('truncated_train',)", "DATASETS.TEST", "()",
        "MODEL.RETINANET.NUM_CLASSES", "3", "DATALOADER.NUM_WORKERS", "2",
        "MODEL.FOCAL_RETINA.COMPILE", "False", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
    ]  # fmt: skip
    return overrides, bad


def assert_names_the_truncated_file(message, bad):
    assert f"ImageReadError: Cannot read image {bad!r}: " in message
    # PIL's own words ("Truncated File Read (OSError)") come between.
    assert "The file is truncated, corrupt or not an image: replace it, or remove its entry " in (
        message
    )


def test_truncated_image_in_a_worker_stops_training_naming_the_file(tmp_path):
    overrides, bad = truncated_dataset_overrides(tmp_path)
    args = default_argument_parser().parse_args(["--config-file", QUICKSTART, *overrides])
    start = time.monotonic()
    try:
        with pytest.raises(ImageReadError) as error:
            run_main(args)
        elapsed = time.monotonic() - start
        message = str(error.value)
    finally:
        DatasetCatalog.remove("truncated_train")
        MetadataCatalog.remove("truncated_train")
        error = None
        gc.collect()  # lets the failed trainer's data-loader workers end
    assert message.startswith("Caught ImageReadError in DataLoader worker process ")
    assert_names_the_truncated_file(message, bad)
    # The whole run (model build included) ends in seconds, not at a timeout.
    assert elapsed < 60, elapsed


def test_truncated_image_in_a_worker_ends_the_train_net_process(tmp_path):
    # As a command: the process, its data-loader workers included, exits, and stderr names
    # the file.
    overrides, bad = truncated_dataset_overrides(tmp_path)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", QUICKSTART,
         *overrides],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr[-3000:]
    assert_names_the_truncated_file(done.stderr, bad)
    assert elapsed < 120, elapsed  # imports included; a hang would meet the 300 s timeout


def test_write_image_helper_draws_boxes(tmp_path):
    # The tests above rely on the drawn boxes being where the json says.
    import numpy as np
    from PIL import Image

    path = write_image(tmp_path / "a.png", (20, 10), [[2, 3, 4, 5]])
    pixels = np.asarray(Image.open(path))
    assert (pixels[3:8, 2:6] == 230).all() and pixels[:3].max() == 40 and pixels[8:].max() == 40
