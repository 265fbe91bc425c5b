#!/usr/bin/env python
"""
Run a trained model on image files or folders; write the images with boxes and a COCO-style
JSON of the detections.

    python tools/demo.py --config-file configs/quickstart.yaml --input photo.jpg more_images/ \\
        --output output/demo --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Images that cannot be read are reported by name and skipped; the exit status is then 1.
"""

import argparse
import json
import logging
import os
import sys

import cv2
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

from retina_plugin import load_config
from retina_plugin.data import ImageReadError, read_image_file, register_datasets_from_config
from retina_plugin.data.mapper import pixel_mean_rgb
from retina_plugin.engine import SafePredictor
from retina_plugin.visualization import draw_detections

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("retina_plugin.demo")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--output", required=True, help="folder for images and detections.json")
    parser.add_argument(
        "--score-thresh", type=float, default=0.5, help="draw boxes scoring at least this"
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def setup_cfg(args):
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def list_images(inputs):
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


def detections_to_coco(instances, image_file, contiguous_to_dataset_id):
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


def run(args) -> int:
    cfg = setup_cfg(args)
    register_datasets_from_config(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    dataset_ids = metadata.get("thing_dataset_id_to_contiguous_id", {})
    contiguous_to_dataset_id = {v: k for k, v in dataset_ids.items()}
    predictor = SafePredictor(cfg)  # MODEL.WEIGHTS is read as weights only
    os.makedirs(args.output, exist_ok=True)
    alpha_background = pixel_mean_rgb(cfg)
    detections, failures = [], []
    for path in list_images(args.input):
        try:
            # As the test loader reads images: EXIF applied, 16-bit scaled, alpha over the mean.
            image, _ = read_image_file(path, "BGR", alpha_background)
        except (OSError, ImageReadError) as error:
            logger.error(f"{error} Skipped.")  # the error names the file and what is wrong
            failures.append(path)
            continue
        instances = predictor(image)["instances"].to("cpu")  # DefaultPredictor takes BGR
        detections.extend(detections_to_coco(instances, path, contiguous_to_dataset_id))
        drawn = draw_detections(image[:, :, ::-1], instances, metadata, args.score_thresh)
        out_name = os.path.splitext(os.path.basename(path))[0] + ".png"
        cv2.imwrite(os.path.join(args.output, out_name), drawn[:, :, ::-1])
        logger.info(f"{path}: {len(instances)} detections")
    with open(os.path.join(args.output, "detections.json"), "w") as f:
        json.dump(detections, f)
    if failures:
        logger.error(f"{len(failures)} image(s) could not be read: {failures}")
        return 1
    return 0


if __name__ == "__main__":
    setup_logger(name="retina_plugin")
    sys.exit(run(get_parser().parse_args()))
