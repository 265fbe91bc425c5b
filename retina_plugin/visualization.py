"""Draw a model's detections on images, beside the ground truth where it is known.

A picture is one or two panels, each under a caption band: the ground truth (when a dataset
record is given) on the left, the predictions on the right. The predictions panel draws the
boxes scoring >= a threshold and says which threshold; when none passes (a weak model, a first
short run) it draws the best few in a muted grey, dashed and thin, with their scores, so the
picture still shows what the model found.
"""

import logging
import os
from typing import Optional

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.utils.visualizer import ColorMode, Visualizer

from .data.images import read_image_file
from .data.mapper import pixel_mean_rgb

__all__ = [
    "NUM_BEST_SHOWN",
    "MUTED_COLOR",
    "GROUND_TRUTH_CAPTION",
    "select_predictions",
    "prediction_caption",
    "add_caption",
    "draw_detections",
    "save_dataset_visualizations",
]

logger = logging.getLogger(__name__)

# How many predictions are drawn, muted, when none reaches the threshold.
NUM_BEST_SHOWN = 3
# Matplotlib RGB in [0, 1]: grey, light enough for Visualizer's dark label background.
MUTED_COLOR = (0.8, 0.8, 0.8)
GROUND_TRUTH_CAPTION = "ground truth"
CAPTION_BACKGROUND = (32, 32, 32)  # RGB uint8 of the band above each panel
CAPTION_TEXT_COLOR = (255, 255, 255)


def select_predictions(instances, score_thresh: float, num_best: int = NUM_BEST_SHOWN):
    """
    The predictions a picture draws: those scoring >= `score_thresh`, or, when none does, the
    `num_best` highest-scoring ones (fewer if there are fewer).

    Returns:
        (Instances, bool): the predictions to draw, sorted by score where they are the best few,
        and whether they passed the threshold (False: draw them muted).
    """
    passed = instances[instances.scores >= score_thresh]
    if len(passed) > 0:
        return passed, True
    order = torch.argsort(instances.scores, descending=True)[:num_best]
    return instances[order], False


def prediction_caption(score_thresh: float, num_passed: int, num_best_shown: int) -> str:
    """The caption of the predictions panel, e.g. ``"score >= 0.50"`` or, when no prediction
    passed, ``"none >= 0.50; best 3 shown"`` (``"none >= 0.50; no detections"`` if none at all)."""
    threshold = f"{score_thresh:.2f}"
    if num_passed > 0:
        return f"score >= {threshold}"
    if num_best_shown == 0:
        return f"none >= {threshold}; no detections"
    return f"none >= {threshold}; best {num_best_shown} shown"


def _class_name(metadata, class_id: int) -> str:
    names = metadata.get("thing_classes", None)
    return names[class_id] if names and 0 <= class_id < len(names) else str(class_id)


def _draw_muted(visualizer: Visualizer, instances, metadata):
    """Each box as a thin dashed grey outline, labelled with its class and score."""
    for box, score, label in zip(
        instances.pred_boxes.tensor.tolist(),
        instances.scores.tolist(),
        instances.pred_classes.tolist(),
    ):
        x0, y0, x1, y1 = box
        visualizer.draw_line(
            [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], MUTED_COLOR, linestyle="--", linewidth=1
        )
        text = f"{_class_name(metadata, label)} {score:.2f}"
        visualizer.draw_text(text, (x0, y0), color=MUTED_COLOR, horizontal_alignment="left")


def _draw_predictions(image_rgb, instances, metadata, score_thresh: float, scale: float, num_best):
    """The predictions panel (RGB uint8, the image enlarged by `scale`) and its caption."""
    instances = instances.to("cpu")
    shown, passed = select_predictions(instances, score_thresh, num_best)
    visualizer = Visualizer(
        image_rgb, metadata=metadata, scale=scale, instance_mode=ColorMode.IMAGE
    )
    if passed:
        panel = visualizer.draw_instance_predictions(shown).get_image()
    else:
        _draw_muted(visualizer, shown, metadata)
        panel = visualizer.get_output().get_image()
    caption = prediction_caption(score_thresh, len(shown) if passed else 0, len(shown))
    return panel, caption


def _draw_ground_truth(image_rgb, record: dict, metadata, scale: float):
    """The ground-truth panel: the record's annotations drawn by Detectron2's Visualizer."""
    visualizer = Visualizer(
        image_rgb, metadata=metadata, scale=scale, instance_mode=ColorMode.IMAGE
    )
    return visualizer.draw_dataset_dict(record).get_image()


def add_caption(panel, caption: str):
    """`panel` (RGB uint8, H x W) under a dark band with `caption` in white: (H + band, W).
    The band is about 1/16 of the width tall (at least 24 px); the text shrinks to fit."""
    width = panel.shape[1]
    band_height = max(24, width // 16)
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1 if band_height < 40 else 2
    font_scale = band_height / 40
    text_width = cv2.getTextSize(caption, font, font_scale, thickness)[0][0]
    font_scale *= min(1.0, (width - 8) / max(text_width, 1))
    band = np.full((band_height, width, 3), CAPTION_BACKGROUND, dtype=np.uint8)
    baseline_y = (band_height + cv2.getTextSize(caption, font, font_scale, thickness)[0][1]) // 2
    cv2.putText(
        band, caption, (4, baseline_y), font, font_scale, CAPTION_TEXT_COLOR, thickness, cv2.LINE_AA
    )
    return np.concatenate([band, panel], axis=0)


def draw_detections(
    image_rgb,
    instances,
    metadata,
    score_thresh: float,
    record: Optional[dict] = None,
    ground_truth_metadata=None,
    min_side: int = 512,
    num_best: int = NUM_BEST_SHOWN,
):
    """
    The picture of one image's detections: RGB uint8, the image enlarged so that its longer side
    is at least `min_side` pixels (labels on small images stay legible), with a caption band
    above each panel.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        instances: the model's ``Instances`` (pred_boxes, scores, pred_classes) for the image.
        metadata: class names of the predictions.
        score_thresh: predictions scoring >= this are drawn (else the best `num_best`, muted).
        record: a Detectron2 dataset dict of the image (``annotations`` in the image's pixels);
            given, its ground truth is drawn in a left panel and the predictions on the right.
        ground_truth_metadata: class names of `record` (default: `metadata`).

    Returns:
        (band + s*H, s*W, 3), or (band + s*H, 2*s*W, 3) with `record`; s = the enlargement.
    """
    scale = max(1.0, min_side / max(image_rgb.shape[:2]))
    predictions, caption = _draw_predictions(
        image_rgb, instances, metadata, score_thresh, scale, num_best
    )
    panels = [add_caption(predictions, caption)]
    if record is not None:
        gt_metadata = metadata if ground_truth_metadata is None else ground_truth_metadata
        ground_truth = _draw_ground_truth(image_rgb, record, gt_metadata, scale)
        panels.insert(0, add_caption(ground_truth, GROUND_TRUTH_CAPTION))
    return np.concatenate(panels, axis=1)


@torch.no_grad()
def save_dataset_visualizations(cfg, model, dataset_name: str, output_dir: str) -> list:
    """
    Run ``model`` on the first ``TEST.FOCAL_RETINA.NUM_VIS_IMAGES`` images of ``dataset_name``
    and write them as PNGs into ``output_dir``: the ground truth on the left, the predictions
    scoring >= ``TEST.FOCAL_RETINA.VIS_SCORE_THRESH`` (or the best few, muted) on the right.

    Returns:
        list[str]: the paths written.
    """
    num_images = cfg.TEST.FOCAL_RETINA.NUM_VIS_IMAGES
    metadata = MetadataCatalog.get(dataset_name)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    os.makedirs(output_dir, exist_ok=True)
    was_training = model.training
    model.eval()
    paths = []
    for record in DatasetCatalog.get(dataset_name)[:num_images]:
        image, _ = read_image_file(record["file_name"], cfg.INPUT.FORMAT, pixel_mean_rgb(cfg))
        height, width = image.shape[:2]
        resized = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.transpose(2, 0, 1).astype("float32"))
        (output,) = model([{"image": tensor, "height": height, "width": width}])
        rgb = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
        drawn = draw_detections(
            rgb, output["instances"], metadata, cfg.TEST.FOCAL_RETINA.VIS_SCORE_THRESH, record
        )
        path = os.path.join(
            output_dir, os.path.basename(record["file_name"]).rsplit(".", 1)[0] + ".png"
        )
        cv2.imwrite(path, drawn[:, :, ::-1])
        paths.append(path)
    model.train(was_training)
    logger.info(f"Wrote {len(paths)} images (ground truth | predictions) to {output_dir}")
    return paths
