"""retina-plugin's config keys: everything new lives under ``MODEL.FOCAL_RETINA``.

The keys Detectron2 already has keep their meaning and are read from where Detectron2 puts them:
``MODEL.RETINANET.FOCAL_LOSS_ALPHA`` (alpha), ``FOCAL_LOSS_GAMMA`` (gamma), ``PRIOR_PROB`` (pi),
``IOU_THRESHOLDS`` / ``IOU_LABELS`` (the background / ignore / foreground IoU bands),
``MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS`` and so on.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_retina_plugin_config"]


def add_retina_plugin_config(cfg: CN) -> CN:
    """Add retina-plugin's keys, with their defaults, to `cfg` (in place) and return it."""
    _C = cfg
    _C.MODEL.FOCAL_RETINA = CN()
    # Name of the head in retina_plugin's RETINA_HEAD_REGISTRY: the paper's classification and
    # box subnets (4 x 3x3 conv + ReLU each, shared over P3-P7), as Detectron2's RetinaNetHead.
    _C.MODEL.FOCAL_RETINA.HEAD_NAME = "FocalRetinaHead"
    # Name of the classification loss in retina_plugin's CLASSIFICATION_LOSS_REGISTRY.
    # "SigmoidFocalLoss": FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with alpha and gamma from
    # MODEL.RETINANET.FOCAL_LOSS_ALPHA / FOCAL_LOSS_GAMMA.
    _C.MODEL.FOCAL_RETINA.LOSS_NAME = "SigmoidFocalLoss"

    # Anchors of MODEL.ANCHOR_GENERATOR.NAME = "OctaveAnchorGenerator", written without the
    # Python `eval` that Detectron2's Base-RetinaNet.yaml needs. Level l gets the sizes
    # BASE_SIZES[l] * 2^(i / SCALES_PER_OCTAVE), i = 0 .. SCALES_PER_OCTAVE - 1, each with every
    # aspect ratio of MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS.
    _C.MODEL.FOCAL_RETINA.ANCHORS = CN()
    # Anchor side at scale 2^0 on each pyramid level P3..P7: the paper's areas 32^2 .. 512^2.
    _C.MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES = [32, 64, 128, 256, 512]
    # Scales per octave: 3 gives the paper's {2^0, 2^(1/3), 2^(2/3)} (Table 1c); 1 gives one.
    _C.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE = 3
    return cfg
