"""An exported model as a detector of pictures: the model file, read without building the PyTorch
model, and ``model.json`` beside it (pre-processing, class names and dataset category ids)."""

import json
import os

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from .deployable import Preprocessing, resize_image
from .formats import load_exported_function

__all__ = ["SIDECAR_NAME", "ExportedDetector", "write_sidecar"]

SIDECAR_NAME = "model.json"


def write_sidecar(output_dir: str, info: dict):
    """Write (or update: another format exported into the same folder) ``model.json``."""
    path = os.path.join(output_dir, SIDECAR_NAME)
    previous = {}
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
    files = {**previous.get("files", {}), **info.pop("files", {})}
    with open(path, "w") as f:
        json.dump({**previous, **info, "files": files}, f, indent=2)


class ExportedDetector:
    """
    ``detector(image_bgr)`` runs the model file `path` (.onnx through ONNX Runtime, .pt2, .ts) on
    an (H, W, 3) uint8 BGR picture and returns its detections as :class:`Instances` of size
    (H, W) with ``pred_boxes``, ``scores`` and ``pred_classes``, like ``DefaultPredictor``'s.
    """

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"--model {path} does not exist; write it with tools/export_model.py."
            )
        sidecar = os.path.join(os.path.dirname(os.path.abspath(path)), SIDECAR_NAME)
        if not os.path.isfile(sidecar):
            raise FileNotFoundError(
                f"{sidecar} is missing: tools/export_model.py writes it beside "
                f"{os.path.basename(path)}, with the pre-processing and class names the model "
                "needs; keep the two files together."
            )
        with open(sidecar) as f:
            info = json.load(f)
        self.path = path
        self.preprocessing = Preprocessing(**info["preprocessing"])
        self.class_names = info["class_names"]
        # contiguous id -> the dataset's category id
        self.category_ids = {i: c for i, c in enumerate(info["category_ids"])}
        self.run = load_exported_function(path)

    @property
    def metadata(self) -> Metadata:
        return Metadata(name=os.path.basename(self.path), thing_classes=self.class_names)

    def detect(self, image_bgr: np.ndarray):
        """(boxes (D, 4) XYXY in the picture's pixels, scores (D,), classes (D,)) numpy."""
        image, size = resize_image(image_bgr, self.preprocessing)
        return self.run(np.ascontiguousarray(image), np.asarray(size, dtype=np.int64))

    def __call__(self, image_bgr: np.ndarray) -> Instances:
        boxes, scores, classes = self.detect(image_bgr)
        instances = Instances(tuple(image_bgr.shape[:2]))
        instances.pred_boxes = Boxes(torch.from_numpy(boxes))
        instances.scores = torch.from_numpy(scores)
        instances.pred_classes = torch.from_numpy(classes)
        return instances
