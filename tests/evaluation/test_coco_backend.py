"""TEST.FOCAL_RETINA.COCO_EVAL_BACKEND: faster-coco-eval inside Detectron2's COCOEvaluator gives
pycocotools' statistics (all 12, and every per-category AP) on a trained model's shapes_val
detections, on hand-made sets with crowd boxes, images without ground truth or detections, and
on no detections at all; bad values are named through train_net.py."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import coco_evaluation
from detectron2.structures import Boxes, Instances
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina_plugin.evaluation import (
    COCOEvaluatorWithBackend,
    check_coco_eval_backend,
    resolve_coco_eval_backend,
)
from tests.utils import QUICKSTART, REPO_ROOT, parse, run_main, unregister_datasets

KEY = "TEST.FOCAL_RETINA.COCO_EVAL_BACKEND"


def _stats(coco_gt, results, cocoeval_fn):
    """The 12 statistics and the precision array of Detectron2's bbox evaluation."""
    coco_eval = coco_evaluation._evaluate_predictions_on_coco(
        coco_gt, results, "bbox", cocoeval_fn=cocoeval_fn
    )
    return np.array(coco_eval.stats), coco_eval.eval["precision"]


def _assert_same_statistics(coco_gt, results):
    expected, expected_precision = _stats(coco_gt, results, COCOeval)
    actual, precision = _stats(coco_gt, results, COCOeval_faster)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(precision, expected_precision, rtol=0, atol=1e-9)
    return expected


def _hand_made_set(tmp_path):
    """4 images, 2 classes: a crowd box, an image without ground truth, one without detections;
    detections that match, miss, duplicate and hit the crowd box."""
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 120} for i in (1, 2, 3, 4)]
    boxes = [  # image, class, XYWH, crowd
        (1, 1, [10, 10, 30, 40], 0), (1, 2, [50, 20, 40, 40], 0), (1, 1, [0, 60, 100, 40], 1),
        (2, 2, [5, 5, 20, 20], 0), (2, 2, [60, 50, 50, 45], 0), (4, 1, [30, 30, 10, 8], 0),
    ]  # fmt: skip
    annotations = [
        {"id": i + 1, "image_id": image, "category_id": category, "bbox": box,
         "area": box[2] * box[3], "iscrowd": crowd}
        for i, (image, category, box, crowd) in enumerate(boxes)
    ]  # fmt: skip
    path = tmp_path / "hand_made.json"
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))  # fmt: skip
    results = [  # image 3 has no ground truth; image 4 no detections
        (1, 1, [11, 9, 30, 41], 0.9), (1, 1, [12, 10, 28, 40], 0.8), (1, 2, [48, 22, 40, 40], 0.7),
        (1, 1, [5, 62, 40, 30], 0.95), (1, 2, [0, 0, 10, 10], 0.3), (2, 2, [6, 5, 19, 21], 0.6),
        (2, 2, [58, 52, 50, 40], 0.55), (2, 1, [60, 50, 50, 45], 0.5), (3, 1, [10, 10, 20, 20], 0.4),
    ]  # fmt: skip
    return str(path), [{"image_id": i, "category_id": c, "bbox": b, "score": s}
                       for i, c, b, s in results]  # fmt: skip


def test_hand_made_set_with_crowd_and_empty_images(tmp_path):
    json_file, results = _hand_made_set(tmp_path)
    stats = _assert_same_statistics(COCO(json_file), results)
    assert 0 < stats[0] < 1  # a set where AP is neither 0 nor 1


def test_random_detections_on_many_images(tmp_path):
    """200 images, 5 classes, boxes of every COCO area range, 0-30 detections per image."""
    rng = np.random.default_rng(0)
    images, annotations, results = [], [], []
    for image_id in range(1, 201):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 600, "width": 600})
        for _ in range(rng.integers(0, 8)):
            w, h = rng.uniform(4, 300, size=2)
            x, y = rng.uniform(0, 600 - w), rng.uniform(0, 600 - h)
            category = int(rng.integers(1, 6))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": int(rng.random() < 0.05)})  # fmt: skip
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.1, size=4) * [w, h, w, h]
                results.append({"image_id": image_id, "category_id": category,
                                "bbox": list(np.array([x, y, w, h]) + jitter),
                                "score": float(rng.random())})  # fmt: skip
        for _ in range(rng.integers(0, 30)):
            w, h = rng.uniform(4, 300, size=2)
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, 6)),
                            "bbox": [*rng.uniform(0, 300, size=2), w, h],
                            "score": float(rng.random())})  # fmt: skip
    path = tmp_path / "random.json"
    categories = [{"id": i, "name": str(i)} for i in range(1, 6)]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))  # fmt: skip
    _assert_same_statistics(COCO(str(path)), results)


def _evaluate(name, backend, image_ids, output_dir):
    """The evaluator's public path (reset, process, evaluate), no detection in any image."""
    evaluator = COCOEvaluatorWithBackend(name, tasks=("bbox",), output_dir=output_dir,
                                         backend=backend)  # fmt: skip
    evaluator.reset()
    for image_id in image_ids:
        empty = Instances(
            (100, 120),
            pred_boxes=Boxes(torch.zeros(0, 4)),
            scores=torch.zeros(0),
            pred_classes=torch.zeros(0, dtype=torch.int64),
        )
        evaluator.process([{"image_id": image_id}], [{"instances": empty}])  # fmt: skip
    return evaluator.evaluate()


def test_no_detections_gives_nan_like_detectron2(tmp_path):
    json_file, _ = _hand_made_set(tmp_path)
    register_coco_instances("hand_made", {}, json_file, str(tmp_path))
    try:
        results = {b: _evaluate("hand_made", b, (1, 2, 3, 4), str(tmp_path / b))["bbox"]
                   for b in ("pycocotools", "faster_coco_eval")}  # fmt: skip
    finally:
        unregister_datasets("hand_made")
    assert results["pycocotools"].keys() == results["faster_coco_eval"].keys()
    assert all(math.isnan(v) for r in results.values() for v in r.values())


def test_a_trained_model_evaluates_the_same(tiny_trained, tmp_path):
    """train_net's path: a 4-step quick start evaluated at the end of training (auto: here
    faster-coco-eval), then --eval-only with pycocotools: every result (AP, AP50, ..., AP per
    category) equal, and the same coco_instances_results.json."""
    root, opts, trained = tiny_trained
    evaluated = run_main(parse("--eval-only", "--config-file", QUICKSTART, *opts,
                               "OUTPUT_DIR", str(tmp_path), KEY, "pycocotools"))  # fmt: skip
    expected, actual = trained["bbox"], evaluated["bbox"]
    assert list(actual) == list(expected) and len(expected) == 6 + 8  # 8 shape classes
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=1e-9, nan_ok=True), name
    assert any(value > 0 for value in expected.values())
    name = os.listdir(tmp_path / "inference")[0]
    files = [d / "inference" / name / "coco_instances_results.json"
             for d in (root / "train", tmp_path)]  # fmt: skip
    assert json.loads(files[0].read_text()) == json.loads(files[1].read_text())


def test_auto_picks_faster_coco_eval_without_detectron2_cpp():
    built = coco_evaluation.COCOeval_opt is not coco_evaluation.COCOeval
    assert resolve_coco_eval_backend("auto") == ("detectron2" if built else "faster_coco_eval")
    assert resolve_coco_eval_backend("detectron2") == ("detectron2" if built else "pycocotools")


@pytest.mark.parametrize(
    "value, message",
    [
        ("fast", "ValueError: TEST.FOCAL_RETINA.COCO_EVAL_BACKEND = 'fast' is not a COCO evaluation "
                 "backend: choose one of auto, detectron2, faster_coco_eval, pycocotools."),
    ],
)  # fmt: skip
def test_bad_backend_through_train_net(tmp_path, value, message):
    done = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", QUICKSTART, "OUTPUT_DIR",
         str(tmp_path), KEY, value],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == message


def test_faster_coco_eval_not_installed_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    with pytest.raises(ValueError) as error:
        check_coco_eval_backend("faster_coco_eval")
    assert str(error.value) == (
        "TEST.FOCAL_RETINA.COCO_EVAL_BACKEND = faster_coco_eval, but faster-coco-eval is not "
        "installed: pip install faster-coco-eval (or choose auto, detectron2 or pycocotools)."
    )
