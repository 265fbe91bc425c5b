"""The demo behind tools/demo.py: a trained model on image files and folders, its detections drawn
on the images and written in COCO result format."""

import json
import logging
import os
from typing import Optional

import cv2
from detectron2.data import MetadataCatalog

from .analysis.config import load_analysis_config
from .data import ImageReadError, read_image_file
from .data.mapper import pixel_mean_rgb
from .engine import SafePredictor
from .visualization import draw_detections

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_SCORE_THRESH",
    "list_images",
    "detections_to_coco",
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
) -> int:
    """
    Run the model of `config_file` (with the KEY VALUE overrides `opts`; ``MODEL.WEIGHTS`` read as
    weights only), or the exported model file `model` (.onnx through ONNX Runtime, .pt2, .ts;
    see retina_plugin/export), on the images of `inputs` (files and folders, see `list_images`).
    Write each image with its boxes scoring >= `score_thresh` as ``<name>.png`` and all
    detections as ``detections.json`` into `output`. An image that cannot be read is logged by
    name and skipped.

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
    os.makedirs(output, exist_ok=True)
    detections, failures = [], []
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
        drawn = draw_detections(image[:, :, ::-1], instances, metadata, score_thresh)
        out_name = os.path.splitext(os.path.basename(path))[0] + ".png"
        cv2.imwrite(os.path.join(output, out_name), drawn[:, :, ::-1])
        logger.info(f"{path}: {len(instances)} detections")
    with open(os.path.join(output, "detections.json"), "w") as f:
        json.dump(detections, f)
    if failures:
        logger.error(f"{len(failures)} image(s) could not be read: {failures}")
        return 1
    return 0
