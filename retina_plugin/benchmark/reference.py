"""Detectron2's own RetinaNet beside FocalRetinaNet, with the same weights: the pair that the
drop-in parity tests and the benchmark compare."""

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from ..config import add_retina_plugin_config

__all__ = ["detectron2_retinanet_config", "detectron2_retinanet_pair"]

_DETECTRON2_CONFIG = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"


def detectron2_retinanet_config(device: str = "cpu"):
    """Detectron2's ``COCO-Detection/retinanet_R_50_FPN_1x.yaml`` with the plug-in's keys, no
    weights, and unit-scale inputs (``PIXEL_STD`` 57-58, see :func:`detectron2_retinanet_pair`)."""
    cfg = get_cfg()
    add_retina_plugin_config(cfg)
    # Detectron2's file needs its Python eval for the anchor sizes: it is trusted here.
    cfg.merge_from_file(model_zoo.get_config_file(_DETECTRON2_CONFIG), allow_unsafe=True)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]
    return cfg


def detectron2_retinanet_pair(device: str = "cpu", seed: int = 0):
    """
    (Detectron2's ``RetinaNet``, ``FocalRetinaNet``) built from Detectron2's own
    ``COCO-Detection/retinanet_R_50_FPN_1x.yaml`` (R50-FPN, 80 classes), where only
    ``MODEL.META_ARCHITECTURE`` differs, with random weights (seeded) loaded strictly into both.
    Inputs are normalised to unit scale (``PIXEL_STD`` 57-58), as randomly initialised weights
    need for their activations to stay finite through 50 layers (Caffe2 weights expect raw 0-255
    pixels).
    """
    cfg = detectron2_retinanet_config(device)
    torch.manual_seed(seed)
    reference = build_model(cfg)
    cfg.MODEL.META_ARCHITECTURE = "FocalRetinaNet"
    ours = build_model(cfg)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours
