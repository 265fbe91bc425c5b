"""The classification-loss interface, its registry, and the one place where alpha is checked
and alpha_t is built."""

import math
from typing import Optional

import torch
from detectron2.utils.registry import Registry
from torch import Tensor, nn

from ..checks import check_at_least, check_registered

__all__ = [
    "CLASSIFICATION_LOSS_REGISTRY",
    "ClassificationLoss",
    "build_classification_loss",
    "get_loss_class",
    "check_alpha",
    "check_focal_loss_config",
    "loss_alpha_from_config",
    "alpha_weights",
    "positive_pairs",
]

CLASSIFICATION_LOSS_REGISTRY = Registry("CLASSIFICATION_LOSS")
CLASSIFICATION_LOSS_REGISTRY.__doc__ = """
Registry for FocalRetinaNet's classification losses, selected by ``MODEL.FOCAL_RETINA.LOSS_NAME``.

A loss is a :class:`ClassificationLoss`, built as ``loss_class(cfg)`` and called as
``loss(pred_logits, gt_labels, anchors) -> Tensor``: ``pred_logits`` (N, R, C) are the head's
logits of all R anchors of N images, C = K (or K + 1 for a loss with ``background_logit``);
``gt_labels`` (N, R) int64 holds each anchor's class in [0, K), K for background, or -1 for an
anchor to ignore (no loss, no gradient); ``anchors`` (R, 4) are the anchor boxes (XYXY, shared by
the images). It returns the summed (not averaged) loss, a scalar; FocalRetinaNet divides it by
the number of foreground anchors.
"""


class ClassificationLoss(nn.Module):
    """
    The interface of a classification loss: the call above, how many logits per anchor the head
    must give, and how logits become the class scores used at inference.
    """

    # True: the head gives K + 1 logits per anchor, the last one for background.
    background_logit: bool = False

    @classmethod
    def num_logits(cls, num_classes: int) -> int:
        """C, the head's logits per anchor for K = `num_classes`: K, or K + 1 with a background
        logit."""
        return num_classes + int(cls.background_logit)

    def class_scores(self, logits: Tensor) -> Tensor:
        """(..., C) logits -> (..., K) class probabilities, the scores of inference (here the
        sigmoid of each logit, as Detectron2's RetinaNet)."""
        return torch.sigmoid(logits)


def build_classification_loss(cfg) -> ClassificationLoss:
    """Build the loss named by ``cfg.MODEL.FOCAL_RETINA.LOSS_NAME``."""
    return get_loss_class(cfg)(cfg)


def get_loss_class(cfg) -> type:
    """The class registered as ``cfg.MODEL.FOCAL_RETINA.LOSS_NAME`` (checked)."""
    name = cfg.MODEL.FOCAL_RETINA.LOSS_NAME
    check_registered("MODEL.FOCAL_RETINA.LOSS_NAME", name, CLASSIFICATION_LOSS_REGISTRY)
    return CLASSIFICATION_LOSS_REGISTRY.get(name)


_ALPHA_KEY = "MODEL.RETINANET.FOCAL_LOSS_ALPHA"
_CLASS_ALPHAS_KEY = "MODEL.FOCAL_RETINA.CLASS_ALPHAS"


def check_alpha(alpha, num_classes: Optional[int] = None, key: str = _ALPHA_KEY):
    """
    The one check of the paper's alpha: a number in [0, 1] (negative: no alpha-balancing), or a
    sequence of one alpha_k in [0, 1] per class (`num_classes` of them, when given). `key` names
    the value in the error (a config key, or a function's argument).

    Returns:
        alpha as a float, or as a tuple of K floats.
    """
    if isinstance(alpha, (int, float)):
        if math.isnan(alpha) or alpha > 1:
            raise ValueError(
                f"{key} = {alpha} is out of range: alpha must lie in [0, 1], or be negative "
                "(e.g. -1) to disable alpha-balancing."
            )
        return float(alpha)
    alpha = tuple(float(a) for a in alpha)
    if (num_classes is not None and len(alpha) != num_classes) or not all(
        0 <= a <= 1 for a in alpha
    ):
        count = "MODEL.RETINANET.NUM_CLASSES" if key == _CLASS_ALPHAS_KEY else "K"
        instead = (
            f" (or be empty to use {_ALPHA_KEY} for every class)"
            if key == _CLASS_ALPHAS_KEY
            else ""
        )
        raise ValueError(
            f"{key} = {list(alpha)} must hold one alpha in [0, 1] per class, i.e. {count} = "
            f"{num_classes} values{instead}."
        )
    return alpha


def positive_pairs(labels: Tensor, num_classes: int) -> Tensor:
    """(...) labels in {-1, 0..K} -> (..., K) bool: True at each anchor's own class."""
    return labels[..., None] == torch.arange(num_classes, device=labels.device)


def alpha_weights(positive: Tensor, alpha, like: Tensor) -> Optional[Tensor]:
    """
    alpha_t of each (anchor, class) pair: alpha (or the class's alpha_k) for a positive pair,
    1 - alpha for a negative one; None for a negative scalar alpha (no balancing).
    """
    if isinstance(alpha, (int, float)) and alpha < 0:
        return None
    alpha = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    return torch.where(positive, alpha, 1 - alpha)


def check_focal_loss_config(alpha, gamma: float):
    """alpha as :func:`check_alpha`, gamma >= 0, as MODEL.RETINANET keys."""
    check_alpha(alpha)
    check_at_least("MODEL.RETINANET.FOCAL_LOSS_GAMMA", gamma, 0)


def loss_alpha_from_config(cfg):
    """
    The alpha of the sigmoid losses: ``MODEL.FOCAL_RETINA.CLASS_ALPHAS`` (one alpha_k per class,
    checked) when given, else the scalar ``MODEL.RETINANET.FOCAL_LOSS_ALPHA``.
    """
    class_alphas = cfg.MODEL.FOCAL_RETINA.CLASS_ALPHAS
    if not class_alphas:
        return cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA
    return check_alpha(class_alphas, cfg.MODEL.RETINANET.NUM_CLASSES, _CLASS_ALPHAS_KEY)
