"""FL*, the focal loss variant of the paper's appendix A (Table 3)."""

import math

import torch
from detectron2.config import configurable
from torch import Tensor
from torch.nn import functional as F

from .base import (
    CLASSIFICATION_LOSS_REGISTRY,
    ClassificationLoss,
    alpha_weights,
    check_alpha,
    loss_alpha_from_config,
    positive_pairs,
)
from .functional import float32_or_wider

__all__ = ["SigmoidFocalLossStar"]


@CLASSIFICATION_LOSS_REGISTRY.register()
class SigmoidFocalLossStar(ClassificationLoss):
    """
    FL* = -alpha_t log(p*_t) / gamma with p*_t = sigmoid(gamma x_t + beta), x_t = x for a positive
    (anchor, class) pair and -x for a negative one (appendix A). gamma = 1, beta = 0 is cross
    entropy; the paper's Table 3 has gamma = 2, beta = 1 (33.8 AP) and gamma = 4, beta = 0 (33.9).

    Inference score: sigmoid(gamma x + beta), the p* of a positive that the loss trains. It ranks
    each class's detections as sigmoid(x) does (same AP ordering); beta and gamma only shift
    which of them pass MODEL.RETINANET.SCORE_THRESH_TEST.
    """

    @configurable
    def __init__(self, *, alpha=-1.0, gamma: float = 2.0, beta: float = 1.0):
        """
        Args:
            alpha: as for :class:`SigmoidFocalLoss` (negative: no balancing; or one per class).
            gamma: the paper's gamma of FL*, > 0 (it divides the loss).
            beta: the paper's beta of FL*, any finite value.
        """
        super().__init__()
        check_alpha(alpha)
        if not gamma > 0:
            raise ValueError(
                f"MODEL.RETINANET.FOCAL_LOSS_GAMMA = {gamma} is out of range for "
                "SigmoidFocalLossStar: FL* divides by gamma, so gamma must be > 0 "
                "(gamma = 1 with MODEL.FOCAL_RETINA.FL_STAR.BETA = 0 is cross entropy)."
            )
        if not math.isfinite(beta):
            raise ValueError(f"MODEL.FOCAL_RETINA.FL_STAR.BETA = {beta} must be a finite number.")
        self.alpha, self.gamma, self.beta = alpha, gamma, beta

    @classmethod
    def from_config(cls, cfg):
        return {
            "alpha": loss_alpha_from_config(cfg),
            "gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "beta": cfg.MODEL.FOCAL_RETINA.FL_STAR.BETA,
        }

    @torch.jit.unused  # training only: scripting (Detectron2\'s scripting_with_instances) compiles inference
    def forward(self, pred_logits: Tensor, gt_labels: Tensor, anchors: Tensor = None) -> Tensor:
        logits = float32_or_wider(pred_logits)
        positive = positive_pairs(gt_labels, logits.shape[-1])  # (N, R, K)
        x_t = torch.where(positive, logits, -logits)
        loss = F.softplus(-(self.gamma * x_t + self.beta)) / self.gamma  # -log sigmoid(.) / gamma
        weights = (gt_labels >= 0).to(loss.dtype)[..., None]  # ignored anchors count 0
        alpha_t = alpha_weights(positive, self.alpha, loss)
        if alpha_t is not None:
            weights = weights * alpha_t
        return (loss * weights).sum()

    def class_scores(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(self.gamma * logits + self.beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, beta={self.beta}"
