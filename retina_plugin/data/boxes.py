"""Drop or clip the boxes of training records before they reach the model.

Detectron2's mapper silently drops empty boxes per image, after ``FILTER_EMPTY_ANNOTATIONS`` has
already decided which images to keep, so an image whose boxes are all broken trains as pure
background, and nothing says how much of a dataset was unusable. Here every box is checked once,
when the training set is built, and each dataset gets one log line with the counts per reason.
"""

import dataclasses
import logging
import math
from typing import Optional

from detectron2.structures import BoxMode

from .images import displayed_size

__all__ = ["BoxCounts", "sanitize_boxes"]

logger = logging.getLogger(__name__)

# Modes with absolute pixel coordinates that this module knows how to check; boxes in other
# modes (rotated ones, which RetinaNet does not use) pass through untouched.
_CHECKED_MODES = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)


@dataclasses.dataclass
class BoxCounts:
    """What ``sanitize_boxes`` did to one dataset."""

    images: int = 0
    boxes: int = 0
    non_finite: int = 0  # dropped: a NaN, infinite or non-numeric coordinate
    degenerate: int = 0  # dropped: zero or negative width or height
    outside: int = 0  # dropped: no overlap with the image
    clipped: int = 0  # kept, clipped to the image

    @property
    def dropped(self) -> int:
        return self.non_finite + self.degenerate + self.outside

    def dropped_summary(self) -> str:
        return (
            f"dropped {self.non_finite} with non-finite coordinates, {self.degenerate} with zero "
            f"or negative width or height, {self.outside} wholly outside the image"
        )

    def summary(self, dataset_name: str) -> str:
        return (
            f"Dataset {dataset_name!r}: {self.images} images, {self.boxes} boxes; "
            f"{self.dropped_summary()}; clipped {self.clipped} partly outside the image; "
            f"kept {self.boxes - self.dropped}."
        )


def sanitize_boxes(dataset_dicts: list[dict], dataset_name: str) -> tuple[list[dict], BoxCounts]:
    """
    Check the boxes of the records `dataset_dicts` (Detectron2's dataset format) of one dataset:
    drop boxes with a non-finite coordinate, with zero or negative width or height, or wholly
    outside the image (``width`` x ``height`` of the record); clip boxes partly outside the image
    to it. The image's frame is the one Detectron2's reader gives it: for a file whose EXIF
    orientation turns it by 90 degrees and whose json gives its stored size, width and height
    swap (see ``images.displayed_size``; read only for records with a box outside the json's
    frame). Logs one line with the counts.

    Records without ``width`` / ``height`` are only checked for finite, non-empty boxes. Boxes
    that need no change keep their original values exactly.

    Returns:
        the new records (the input records and annotations are not modified) and the counts.
    """
    counts = BoxCounts(images=len(dataset_dicts))
    sanitized = []
    for record in dataset_dicts:
        annotations = record.get("annotations")
        if annotations is None:
            sanitized.append(record)
            continue
        size = (record.get("width"), record.get("height"))
        checked = [_check_box(annotation, *size) for annotation in annotations]
        if size[0] is not None and size[1] is not None and "file_name" in record:
            # A box outside the json's frame may lie inside the image as it is shown (and read):
            # an EXIF-rotated file whose json gives its stored size. Only then is the file read.
            if any(reason == "outside" or bbox is not None for reason, bbox in checked):
                shown = displayed_size(record["file_name"], size)
                if shown != size:
                    checked = [_check_box(annotation, *shown) for annotation in annotations]
        kept = []
        for annotation, (reason, bbox) in zip(annotations, checked):
            counts.boxes += 1
            if reason is not None:
                setattr(counts, reason, getattr(counts, reason) + 1)
                continue
            if bbox is not None:
                counts.clipped += 1
                annotation = {**annotation, "bbox": bbox}
            kept.append(annotation)
        sanitized.append({**record, "annotations": kept})
    logger.info(counts.summary(dataset_name))
    return sanitized, counts


def _check_box(annotation: dict, width, height) -> tuple[Optional[str], Optional[list]]:
    """(reason to drop, None), (None, clipped bbox) or (None, None) to keep it as it is."""
    bbox, mode = annotation.get("bbox"), annotation.get("bbox_mode", BoxMode.XYWH_ABS)
    if bbox is None or mode not in _CHECKED_MODES:
        return None, None
    try:
        x0, y0, x1, y1 = (float(v) for v in bbox)
    except (TypeError, ValueError):  # None, strings: as unusable as NaN
        return "non_finite", None
    if mode == BoxMode.XYWH_ABS:
        x1, y1 = x0 + x1, y0 + y1
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return "non_finite", None
    if x1 <= x0 or y1 <= y0:
        return "degenerate", None
    if width is None or height is None:
        return None, None
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "outside", None
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return None, None
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, float(width)), min(y1, float(height))
    if mode == BoxMode.XYWH_ABS:
        return None, [x0, y0, x1 - x0, y1 - y0]
    return None, [x0, y0, x1, y1]
