"""The registry of dense heads for FocalRetinaNet, and the paper's head."""

from typing import Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.utils.registry import Registry
from torch import Tensor

from ..checks import check_at_least, check_in_range, check_registered
from ..losses import get_loss_class
from .priors import classification_bias, classification_prior

__all__ = ["RETINA_HEAD_REGISTRY", "build_retina_head", "FocalRetinaHead"]

RETINA_HEAD_REGISTRY = Registry("RETINA_HEAD")
RETINA_HEAD_REGISTRY.__doc__ = """
Registry for FocalRetinaNet's heads, selected by ``MODEL.FOCAL_RETINA.HEAD_NAME``.

A head is built as ``head_class(cfg, input_shape, class_priors=None)``, with ``input_shape:
List[ShapeSpec]`` the shapes of the feature levels in ``MODEL.RETINANET.IN_FEATURES`` and
``class_priors`` the (K,) class probabilities to start from (None: MODEL.RETINANET.PRIOR_PROB for
every class), and called as
``head(features: List[Tensor]) -> (logits, deltas)``, where, for level i with A anchors per location,
``logits[i]`` has shape (N, A * C, Hi, Wi) and ``deltas[i]`` (N, A * 4, Hi, Wi); C = K, or
K + 1 when the classification loss has a background logit (``background_logit``).
"""


def build_retina_head(cfg, input_shape: list[ShapeSpec], class_priors: Optional[Tensor] = None):
    """Build the head named by ``cfg.MODEL.FOCAL_RETINA.HEAD_NAME``."""
    name = cfg.MODEL.FOCAL_RETINA.HEAD_NAME
    check_registered("MODEL.FOCAL_RETINA.HEAD_NAME", name, RETINA_HEAD_REGISTRY)
    return RETINA_HEAD_REGISTRY.get(name)(cfg, input_shape, class_priors=class_priors)


def num_anchors_per_location(cfg, input_shape: list[ShapeSpec]) -> int:
    """A, the number of anchors per location, which every level must share (the head is shared)."""
    num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
    if len(set(num_anchors)) != 1:
        raise ValueError(
            f"The anchor generator gives {num_anchors} anchors per location on the levels "
            f"{list(cfg.MODEL.RETINANET.IN_FEATURES)}; the head is shared across levels, so every "
            "level needs the same number: give each level as many sizes (or scales per octave) "
            "and MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS as the others."
        )
    return num_anchors[0]


@RETINA_HEAD_REGISTRY.register()
class FocalRetinaHead(RetinaNetHead):
    """
    The paper's head (section 4): a classification subnet of NUM_CONVS x (3x3 conv, C channels,
    ReLU) then a 3x3 conv with K * A outputs, and a box subnet of the same shape ending in 4 * A
    outputs, shared across pyramid levels. New convs are initialised with N(0, 0.01) weights and
    zero bias, the final classification bias with b = -log((1 - pi) / pi).

    It is Detectron2's :class:`RetinaNetHead` (same parameters and names, so Detectron2
    checkpoints load unchanged), built with its config checked. For a loss over K + 1 classes
    (``background_logit``) the last conv has (K + 1) * A outputs and its background bias starts
    at log(K (1 - pi) / pi), the others at 0 (see :func:`retina_plugin.modeling.priors.classification_bias`).
    """

    @configurable
    def __init__(
        self, *, num_classes: int, class_priors: Tensor, background_logit: bool = False, **kwargs
    ):
        """
        Args:
            num_classes: K.
            class_priors: (K,) pi_k, each class's probability at initialisation.
            background_logit: give a (K + 1)-th logit, for background.
            kwargs: the other arguments of Detectron2's :class:`RetinaNetHead` (but prior_prob).
        """
        if len(class_priors) != num_classes:
            raise ValueError(f"{len(class_priors)} class priors given for {num_classes} classes.")
        bias = classification_bias(class_priors, background_logit)
        # Detectron2's head initialises its own bias from prior_prob; it is replaced here.
        super().__init__(num_classes=len(bias), prior_prob=0.5, **kwargs)
        with torch.no_grad():
            self.cls_score.bias.view(-1, len(bias)).copy_(bias)  # A anchors x C logits

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec], class_priors: Optional[Tensor] = None):
        retina = cfg.MODEL.RETINANET
        check_at_least("MODEL.RETINANET.NUM_CLASSES", retina.NUM_CLASSES, 1)
        check_at_least("MODEL.RETINANET.NUM_CONVS", retina.NUM_CONVS, 0)
        check_in_range(
            "MODEL.RETINANET.PRIOR_PROB", retina.PRIOR_PROB, 0, 1, low_open=True, high_open=True
        )
        if len({shape.channels for shape in input_shape}) != 1:
            raise ValueError(
                f"The levels {list(retina.IN_FEATURES)} have channels "
                f"{[shape.channels for shape in input_shape]}; a head shared across levels needs "
                "one channel count (MODEL.FPN.OUT_CHANNELS)."
            )
        return {
            "input_shape": input_shape,
            "num_classes": retina.NUM_CLASSES,
            "conv_dims": [input_shape[0].channels] * retina.NUM_CONVS,
            "class_priors": classification_prior(cfg) if class_priors is None else class_priors,
            "norm": retina.NORM,
            "num_anchors": num_anchors_per_location(cfg, input_shape),
            "background_logit": get_loss_class(cfg).background_logit,
        }
