"""
Test-time augmentation for FocalRetinaNet (``TEST.AUG.ENABLED``). Detectron2's
``GeneralizedRCNNWithTTA`` refuses RetinaNet ("TTA is only supported on GeneralizedRCNN"); this is
its counterpart for a one-stage detector, with Detectron2's own keys and mapper
(``DatasetMapperTTA``: ``TEST.AUG.MIN_SIZES`` x ``TEST.AUG.FLIP``, ``TEST.AUG.MAX_SIZE``).

Each view is detected as usual (score threshold, top-k, NMS, at most DETECTIONS_PER_IMAGE); its
boxes are mapped back to the original image through the view's transforms (resize, flip); all
views' detections are merged by one more NMS per class (``MODEL.RETINANET.NMS_THRESH_TEST``, or
across classes with ``MODEL.FOCAL_RETINA.TEST.CLASS_AGNOSTIC_NMS``), and the
``TEST.DETECTIONS_PER_IMAGE`` best are kept.
"""

import torch
from detectron2.config import configurable
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from detectron2.structures import Boxes, Instances
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .detections import batched_nms
from .meta_arch import FocalRetinaNet

__all__ = ["FocalRetinaNetWithTTA"]


class FocalRetinaNetWithTTA(nn.Module):
    """A :class:`FocalRetinaNet` with test-time augmentation: called on a list of inputs as the
    model is (each with "image" as the test loader gives it, "height" and "width"), it returns
    ``[{"instances": Instances}]`` in the original images' pixels."""

    @configurable
    def __init__(self, model: FocalRetinaNet, tta_mapper, batch_size: int = 3):
        """
        Args:
            model: the detector (its DistributedDataParallel wrapper is taken off).
            tta_mapper: makes the augmented views of an input, each with its "transforms"
                (Detectron2's ``DatasetMapperTTA``).
            batch_size: views detected together.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, FocalRetinaNet):
            raise TypeError(
                f"FocalRetinaNetWithTTA needs a FocalRetinaNet, got {type(model).__name__} "
                "(for R-CNN models use Detectron2's GeneralizedRCNNWithTTA)."
            )
        self.model = model
        self.tta_mapper = tta_mapper
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, cfg, model, batch_size: int = 3):
        return {"model": model, "tta_mapper": DatasetMapperTTA(cfg), "batch_size": batch_size}

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return [{"instances": self._detect_one_image(inputs)} for inputs in batched_inputs]

    def _detect_one_image(self, inputs: dict) -> Instances:
        original_size = (inputs["height"], inputs["width"])
        views = self.tta_mapper(inputs)
        boxes, scores, classes = [], [], []
        for start in range(0, len(views), self.batch_size):
            batch = views[start : start + self.batch_size]
            transforms = [view.pop("transforms") for view in batch]
            for view in batch:  # detections in the view's own pixels
                view.pop("height", None)
                view.pop("width", None)
            outputs = self.model(batch)
            for output, transform in zip(outputs, transforms):
                found = output["instances"].to("cpu")
                view_boxes = found.pred_boxes.tensor.numpy()
                boxes.append(torch.from_numpy(transform.inverse().apply_box(view_boxes)).float())
                scores.append(found.scores)
                classes.append(found.pred_classes)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        model = self.model
        keep = batched_nms(
            boxes, scores, classes, model.test_nms_thresh, model.num_classes,
            model.test_class_agnostic_nms,
        )[: model.max_detections_per_image]  # fmt: skip
        merged = Instances(original_size)
        merged.pred_boxes = Boxes(boxes[keep])
        merged.pred_boxes.clip(original_size)
        merged.scores = scores[keep]
        merged.pred_classes = classes[keep]
        return merged
