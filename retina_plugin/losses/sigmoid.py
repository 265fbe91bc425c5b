"""The paper's sigmoid losses: focal loss (the default) and (alpha-balanced) cross entropy."""

from collections.abc import Sequence
from typing import Union

import torch
from detectron2.config import configurable
from torch import Tensor

from .base import (
    CLASSIFICATION_LOSS_REGISTRY,
    ClassificationLoss,
    check_focal_loss_config,
    loss_alpha_from_config,
)
from .functional import sigmoid_focal_loss_from_labels

__all__ = ["SigmoidFocalLoss", "SigmoidCrossEntropyLoss"]

Alpha = Union[float, Sequence[float]]


@CLASSIFICATION_LOSS_REGISTRY.register()
class SigmoidFocalLoss(ClassificationLoss):
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) over every (anchor, class) pair, summed."""

    @configurable
    def __init__(self, *, alpha: Alpha = 0.25, gamma: float = 2.0, compiled: bool = True):
        """
        Args:
            alpha: the paper's alpha in [0, 1], or negative for no alpha-balancing; or K values,
                one per class (alpha_k for the positives of class k, 1 - alpha_k its negatives).
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
            "alpha": loss_alpha_from_config(cfg),
            "gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "compiled": cfg.MODEL.FOCAL_RETINA.COMPILE,
        }

    @torch.jit.unused  # training only: scripting (Detectron2\'s scripting_with_instances) compiles inference
    def forward(self, pred_logits: Tensor, gt_labels: Tensor, anchors: Tensor = None) -> Tensor:
        num_logits = pred_logits.shape[-1]
        return sigmoid_focal_loss_from_labels(
            pred_logits.reshape(-1, num_logits),
            gt_labels.reshape(-1),
            self.alpha,
            self.gamma,
            self.compiled,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"


@CLASSIFICATION_LOSS_REGISTRY.register()
class SigmoidCrossEntropyLoss(SigmoidFocalLoss):
    """
    CE(p_t) = -alpha_t log(p_t), the paper's (alpha-balanced) cross entropy baseline (Table 1a):
    the focal loss with gamma = 0. alpha < 0 (e.g. -1) gives plain cross entropy.
    """

    @configurable
    def __init__(self, *, alpha: Alpha = -1.0, compiled: bool = True):
        super().__init__(alpha=alpha, gamma=0.0, compiled=compiled)

    @classmethod
    def from_config(cls, cfg):
        return {"alpha": loss_alpha_from_config(cfg), "compiled": cfg.MODEL.FOCAL_RETINA.COMPILE}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
