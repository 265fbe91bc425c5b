"""COCO bbox evaluation time: pycocotools' COCOeval against faster-coco-eval, both through
Detectron2's ``_evaluate_predictions_on_coco`` (what ``COCOEvaluator`` runs), on a synthetic
COCO-sized result set, after checking that both give the same 12 statistics."""

import contextlib
import functools
import io
import time

import numpy as np
from detectron2.evaluation import coco_evaluation
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["synthetic_coco", "bench_coco_eval"]

BACKENDS = {
    "pycocotools COCOeval": COCOeval,
    "faster-coco-eval": functools.partial(COCOeval_faster, print_function=lambda *a: None),
}


def synthetic_coco(num_images: int, boxes_per_image: float, num_classes: int,
                   detections_per_image: int, seed: int = 0):  # fmt: skip
    """A COCO ground truth (``pycocotools.coco.COCO``) of `num_images` 640x480 images with
    Poisson(`boxes_per_image`) boxes each (COCO's mix of small, medium and large areas, 1% crowd)
    in `num_classes` classes, and `detections_per_image` detections per image: each box found
    with some jitter (70%) plus random boxes, random scores."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        count = rng.poisson(boxes_per_image)
        side = np.exp(rng.uniform(np.log(6), np.log(400), size=(count, 2)))
        corner = rng.uniform(0, 1, size=(count, 2)) * (np.array([640, 480]) - side).clip(min=1)
        classes = rng.integers(1, num_classes + 1, size=count)
        for (x, y), (w, h), c in zip(corner, side, classes):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(c), "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": int(rng.random() < 0.01)})  # fmt: skip
        found = rng.random(count) < 0.7
        boxes = np.concatenate([corner, side], axis=1)[found]
        boxes = boxes + rng.normal(0, 0.08, size=boxes.shape) * np.tile(side[found], 2)
        labels = classes[found]
        extra = detections_per_image - len(boxes)
        if extra > 0:
            wh = np.exp(rng.uniform(np.log(6), np.log(300), size=(extra, 2)))
            xy = rng.uniform(0, 1, size=(extra, 2)) * (np.array([640, 480]) - wh)
            boxes = np.concatenate([boxes, np.concatenate([xy, wh], axis=1)])
            labels = np.concatenate([labels, rng.integers(1, num_classes + 1, size=extra)])
        scores = rng.random(len(boxes))
        for box, label, score in list(zip(boxes, labels, scores))[:detections_per_image]:
            results.append({"image_id": image_id, "category_id": int(label),
                            "bbox": [float(v) for v in box], "score": float(score)})  # fmt: skip
    categories = [{"id": i, "name": f"class {i}"} for i in range(1, num_classes + 1)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, results


def _evaluate(coco, results, cocoeval_fn):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = coco_evaluation._evaluate_predictions_on_coco(
            coco, results, "bbox", cocoeval_fn=cocoeval_fn
        )
    return time.perf_counter() - start, np.array(coco_eval.stats)


def bench_coco_eval(num_images: int, repeats: int):
    """Print the agreement and the table of median seconds per evaluation (each one: load the
    results, evaluate, accumulate, summarize)."""
    coco, results = synthetic_coco(num_images, 7.3, 80, 100)
    print(f"\n## COCO bbox evaluation: {num_images} images, {len(coco.anns)} ground-truth boxes in "
          f"80 classes, {len(results)} detections")  # fmt: skip
    times = {name: [] for name in BACKENDS}
    stats = {}
    for _ in range(repeats):
        for name, cocoeval_fn in BACKENDS.items():
            seconds, stats[name] = _evaluate(coco, results, cocoeval_fn)
            times[name].append(seconds)
    reference, fast = stats.values()
    difference = float(np.abs(reference - fast).max())
    print(f"Same 12 statistics (largest difference {difference:.1e}; AP {reference[0]:.4f})")
    assert difference <= 1e-9, (reference, fast)
    ref = float(np.median(times["pycocotools COCOeval"]))
    print("| backend | s per evaluation | speed-up |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        median = float(np.median(values))
        print(f"| {name} | {median:.2f} | {ref / median:.1f}x |")
