"""The softmax focal loss over K + 1 classes (background as a class), the paper's alternative."""

import torch
from detectron2.config import configurable
from torch import Tensor

from .base import CLASSIFICATION_LOSS_REGISTRY, ClassificationLoss, check_focal_loss_config
from .functional import float32_or_wider

__all__ = ["SoftmaxFocalLoss"]


@CLASSIFICATION_LOSS_REGISTRY.register()
class SoftmaxFocalLoss(ClassificationLoss):
    """
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) per anchor, with p = softmax over K + 1 logits
    (the last one background) and p_t the probability of the anchor's class; alpha_t = alpha for
    foreground anchors, 1 - alpha for background ones (negative alpha: no balancing). gamma = 0,
    alpha < 0 is the usual softmax cross entropy.

    log(1 - p_t) is computed as logsumexp of the other logits minus logsumexp of all, so values
    and gradients stay finite for every gamma >= 0 even where p_t rounds to 1. The head's
    background bias starts at log(K (1 - pi) / pi) (foreground biases 0), so every anchor starts
    with background probability 1 - pi. Inference scores are the K foreground probabilities.
    """

    background_logit = True

    @configurable
    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0):
        """
        Args:
            alpha: weight of the foreground anchors in [0, 1] (background: 1 - alpha), or
                negative for no balancing.
            gamma: the paper's focusing parameter, >= 0.
        """
        super().__init__()
        check_focal_loss_config(alpha, gamma)
        self.alpha, self.gamma = alpha, gamma

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.FOCAL_RETINA.CLASS_ALPHAS:
            raise ValueError(
                "MODEL.FOCAL_RETINA.CLASS_ALPHAS is not supported by SoftmaxFocalLoss (it has one "
                "foreground alpha, MODEL.RETINANET.FOCAL_LOSS_ALPHA); set CLASS_ALPHAS to []."
            )
        return {
            "alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
        }

    @torch.jit.unused  # training only: scripting (Detectron2\'s scripting_with_instances) compiles inference
    def forward(self, pred_logits: Tensor, gt_labels: Tensor, anchors: Tensor = None) -> Tensor:
        logits = float32_or_wider(pred_logits)  # (N, R, K + 1)
        background = logits.shape[-1] - 1
        target = gt_labels.clamp(min=0)[..., None]  # ignored anchors: any class, weight 0
        log_normalizer = logits.logsumexp(dim=-1)  # (N, R)
        log_p_t = logits.gather(-1, target).squeeze(-1) - log_normalizer
        log_others = logits.scatter(-1, target, float("-inf")).logsumexp(dim=-1)
        modulator = torch.exp(self.gamma * (log_others - log_normalizer))  # (1 - p_t)^gamma
        weights = (gt_labels >= 0).to(logits.dtype)
        if self.alpha >= 0:
            weights = weights * torch.where(gt_labels == background, 1 - self.alpha, self.alpha)
        return -(weights * modulator * log_p_t).sum()

    def class_scores(self, logits: Tensor) -> Tensor:
        """The softmax probabilities of the K foreground classes (background dropped)."""
        return float32_or_wider(logits).softmax(dim=-1)[..., :-1]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"
