"""The registry of classification losses for FocalRetinaNet, and the paper's focal loss."""

import math

from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import Tensor, nn

from .checks import check_at_least, check_registered
from .focal_loss import sigmoid_focal_loss_from_labels

__all__ = ["CLASSIFICATION_LOSS_REGISTRY", "build_classification_loss", "SigmoidFocalLoss"]

CLASSIFICATION_LOSS_REGISTRY = Registry("CLASSIFICATION_LOSS")
CLASSIFICATION_LOSS_REGISTRY.__doc__ = """
Registry for FocalRetinaNet's classification losses, selected by ``MODEL.FOCAL_RETINA.LOSS_NAME``.

A loss is built as ``loss_class(cfg)`` and called as ``loss(pred_logits, gt_labels) -> Tensor``:
``pred_logits`` (M, K) are the head's logits of all M anchors of all images; ``gt_labels`` (M,)
int64 holds each anchor's class in [0, K), K for background, or -1 for an anchor to ignore
(no loss, no gradient). It returns the summed (not averaged) loss, a scalar; FocalRetinaNet
divides it by the number of foreground anchors.
"""


def build_classification_loss(cfg) -> nn.Module:
    """Build the loss named by ``cfg.MODEL.FOCAL_RETINA.LOSS_NAME``."""
    name = cfg.MODEL.FOCAL_RETINA.LOSS_NAME
    check_registered("MODEL.FOCAL_RETINA.LOSS_NAME", name, CLASSIFICATION_LOSS_REGISTRY)
    return CLASSIFICATION_LOSS_REGISTRY.get(name)(cfg)


def check_focal_loss_config(alpha: float, gamma: float):
    """alpha in [0, 1] (negative: no balancing), gamma >= 0, as MODEL.RETINANET keys."""
    if math.isnan(alpha) or alpha > 1:
        raise ValueError(
            f"MODEL.RETINANET.FOCAL_LOSS_ALPHA = {alpha} is out of range: alpha must lie in "
            "[0, 1], or be negative (e.g. -1) to disable alpha-balancing."
        )
    check_at_least("MODEL.RETINANET.FOCAL_LOSS_GAMMA", gamma, 0)


@CLASSIFICATION_LOSS_REGISTRY.register()
class SigmoidFocalLoss(nn.Module):
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) over every (anchor, class) pair, summed."""

    @configurable
    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, compiled: bool = True):
        """
        Args:
            alpha: the paper's alpha in [0, 1], or negative for no alpha-balancing.
            gamma: the paper's focusing parameter, >= 0 (0: alpha-balanced cross entropy).
            compiled: run the fused loss through torch.compile (eager if that fails).
        """
        super().__init__()
        check_focal_loss_config(alpha, gamma)
        self.alpha = alpha
        self.gamma = gamma
        self.compiled = compiled

    @classmethod
    def from_config(cls, cfg):
        return {
            "alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "compiled": cfg.MODEL.FOCAL_RETINA.COMPILE,
        }

    def forward(self, pred_logits: Tensor, gt_labels: Tensor) -> Tensor:
        return sigmoid_focal_loss_from_labels(
            pred_logits, gt_labels, self.alpha, self.gamma, self.compiled
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"
