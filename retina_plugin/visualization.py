"""Draw a model's detections on dataset images, for a look at what it found."""

import logging
import os

import cv2
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.utils.visualizer import Visualizer

from .data.images import read_image_file
from .data.mapper import pixel_mean_rgb

__all__ = ["draw_detections", "save_dataset_visualizations"]

logger = logging.getLogger(__name__)


def draw_detections(image_rgb, instances, metadata, score_thresh: float, min_side: int = 512):
    """
    Return an RGB uint8 image with the detections scoring >= score_thresh drawn on it, enlarged
    so that its longer side is at least `min_side` pixels (labels on small images stay legible).
    """
    instances = instances[instances.scores >= score_thresh].to("cpu")
    scale = max(1.0, min_side / max(image_rgb.shape[:2]))
    visualizer = Visualizer(image_rgb, metadata=metadata, scale=scale)
    return visualizer.draw_instance_predictions(instances).get_image()


@torch.no_grad()
def save_dataset_visualizations(cfg, model, dataset_name: str, output_dir: str) -> list:
    """
    Run ``model`` on the first ``TEST.FOCAL_RETINA.NUM_VIS_IMAGES`` images of ``dataset_name``
    and write them, with the predicted boxes, as PNGs into ``output_dir``.

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
            rgb, output["instances"], metadata, cfg.TEST.FOCAL_RETINA.VIS_SCORE_THRESH
        )
        path = os.path.join(
            output_dir, os.path.basename(record["file_name"]).rsplit(".", 1)[0] + ".png"
        )
        cv2.imwrite(path, drawn[:, :, ::-1])
        paths.append(path)
    model.train(was_training)
    logger.info(f"Wrote {len(paths)} images with predicted boxes to {output_dir}")
    return paths
