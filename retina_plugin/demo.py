"""The demo behind tools/demo.py: a trained model on image files and folders, its detections drawn
on the images (beside the ground truth of a dataset, when one is given) and written in COCO result
format."""

import collections
import json
import logging
import os
from typing import Optional

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog

from .analysis.config import load_analysis_config
from .data import ImageReadError, read_image_file
from .data.coco_json import load_checked_coco_json
from .data.mapper import pixel_mean_rgb
from .engine import SafePredictor
from .visualization import draw_detections

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_SCORE_THRESH",
    "list_images",
    "detections_to_coco",
    "GroundTruth",
    "load_ground_truth",
    "run_demo",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_SCORE_THRESH = 0.5

logger = logging.getLogger(__name__)


def list_images(inputs) -> list:
    """The image files named, and those directly inside the folders named, in sorted order."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(IMAGE_EXTENSIONS))
            paths.extend(os.path.join(item, n) for n in names)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"--input {item!r} is neither a file nor a folder.")
    return paths


def detections_to_coco(instances, image_file: str, contiguous_to_dataset_id: dict) -> list:
    """
    The detections of one image as COCO results: boxes XYXY -> XYWH, contiguous class ids -> the
    dataset's category ids (unchanged where the mapping lacks them), plus ``file_name``.
    """
    boxes = instances.pred_boxes.tensor.tolist()
    records = []
    for (x0, y0, x1, y1), score, label in zip(
        boxes, instances.scores.tolist(), instances.pred_classes.tolist()
    ):
        records.append(
            {
                "file_name": image_file,
                "category_id": contiguous_to_dataset_id.get(label, label),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": score,
            }
        )
    return records


class GroundTruth:
    """The annotated images of a dataset, found by the path of an input image: the same file, or
    else the only record with the same file name (the images may have been copied elsewhere)."""

    def __init__(self, records: list, metadata):
        self.metadata = metadata
        self._by_path = {os.path.realpath(r["file_name"]): r for r in records}
        names = [os.path.basename(r["file_name"]) for r in records]
        counts = collections.Counter(names)
        self._by_name = {name: r for name, r in zip(names, records) if counts[name] == 1}

    def find(self, image_file: str, image_shape) -> Optional[dict]:
        """The record of `image_file`, or None if there is none or its size is not
        `image_shape` (H, W, ...) (its boxes would be drawn in the wrong place)."""
        record = self._by_path.get(os.path.realpath(image_file))
        if record is None:
            record = self._by_name.get(os.path.basename(image_file))
        if record is None:
            return None
        size = (record.get("height"), record.get("width"))
        if None not in size and size != tuple(image_shape[:2]):
            logger.warning(
                f"{image_file}: its ground truth {record['file_name']!r} is {size[1]}x{size[0]}, "
                f"the image {image_shape[1]}x{image_shape[0]}; drawn without ground truth."
            )
            return None
        return record


def load_ground_truth(source: str) -> GroundTruth:
    """
    The ground truth named by `source`: a COCO json file (its images matched by file name to the
    inputs) or a registered dataset (e.g. one of ``DATASETS.FOCAL_RETINA.COCO`` or
    ``shapes_val``, registered from the config).
    """
    if os.path.isfile(source):
        name = f"demo_ground_truth:{os.path.realpath(source)}"
        records = load_checked_coco_json(source, os.path.dirname(source), name)
        return GroundTruth(records, MetadataCatalog.get(name))
    if source in DatasetCatalog.list():
        return GroundTruth(DatasetCatalog.get(source), MetadataCatalog.get(source))
    raise ValueError(
        f"--ground-truth {source!r} is neither a COCO json file nor a registered dataset "
        "(those of the config's DATASETS are registered)."
    )


def _pytorch_detector(config_file: str, opts):
    cfg = load_analysis_config(config_file, opts)
    cfg.freeze()
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    dataset_ids = metadata.get("thing_dataset_id_to_contiguous_id", {})
    predictor = SafePredictor(cfg)  # MODEL.WEIGHTS is read as weights only; takes BGR

    def detect(image_bgr):
        return predictor(image_bgr)["instances"].to("cpu")

    return detect, metadata, {v: k for k, v in dataset_ids.items()}, pixel_mean_rgb(cfg)


def _exported_detector(model_file: str):
    from .export import ExportedDetector  # onnxruntime only when asked for

    detector = ExportedDetector(model_file)
    preprocessing = detector.preprocessing
    return detector, detector.metadata, detector.category_ids, preprocessing.alpha_background


def run_demo(
    config_file: Optional[str],
    inputs,
    output: str,
    score_thresh: float = DEFAULT_SCORE_THRESH,
    opts=(),
    model: Optional[str] = None,
    ground_truth: Optional[str] = None,
) -> int:
    """
    Run the model of `config_file` (with the KEY VALUE overrides `opts`; ``MODEL.WEIGHTS`` read as
    weights only), or the exported model file `model` (.onnx through ONNX Runtime, .pt2, .ts;
    see retina_plugin/export), on the images of `inputs` (files and folders, see `list_images`).
    Write each image with its boxes scoring >= `score_thresh` (or the best few, muted, when none
    does) as ``<name>.png`` and all detections as ``detections.json`` into `output`. With
    `ground_truth` (a COCO json file or a registered dataset, see `load_ground_truth`), the images
    it annotates are drawn with their ground truth on the left. An image that cannot be read is
    logged by name and skipped.

    Returns:
        int: the exit status: 0, or 1 when some image could not be read.
    """
    if (config_file is None) == (model is None):
        raise ValueError(
            "Give either --config-file (a PyTorch model) or --model (an exported one)."
        )
    if model is not None:
        detect, metadata, contiguous_to_dataset_id, alpha_background = _exported_detector(model)
    else:
        detect, metadata, contiguous_to_dataset_id, alpha_background = _pytorch_detector(
            config_file, opts
        )
    truth = None if ground_truth is None else load_ground_truth(ground_truth)
    truth_metadata = None if truth is None else truth.metadata
    os.makedirs(output, exist_ok=True)
    detections, failures, num_with_truth = [], [], 0
    for path in list_images(inputs):
        try:
            # As the test loader reads images: EXIF applied, 16-bit scaled, alpha over the mean.
            image, _ = read_image_file(path, "BGR", alpha_background)
        except (OSError, ImageReadError) as error:
            logger.error(f"{error} Skipped.")  # the error names the file and what is wrong
            failures.append(path)
            continue
        instances = detect(image)
        detections.extend(detections_to_coco(instances, path, contiguous_to_dataset_id))
        record = None if truth is None else truth.find(path, image.shape)
        num_with_truth += record is not None
        drawn = draw_detections(
            image[:, :, ::-1], instances, metadata, score_thresh, record, truth_metadata
        )
        out_name = os.path.splitext(os.path.basename(path))[0] + ".png"
        cv2.imwrite(os.path.join(output, out_name), drawn[:, :, ::-1])
        with_truth = (
            "" if record is None else f", {len(record.get('annotations', []))} ground-truth boxes"
        )
        logger.info(f"{path}: {len(instances)} detections{with_truth}")
    if truth is not None and num_with_truth == 0:
        logger.warning(f"No input image is in --ground-truth {ground_truth!r}: drawn without it.")
    with open(os.path.join(output, "detections.json"), "w") as f:
        json.dump(detections, f)
    if failures:
        logger.error(f"{len(failures)} image(s) could not be read: {failures}")
        return 1
    return 0
