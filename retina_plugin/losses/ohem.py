"""Online hard example mining (OHEM) for cross-entropy training, the paper's Table 1d baseline."""

import math

import torch
from detectron2.config import configurable
from torch import Tensor
from torch.nn import functional as F

from ..checks import check_at_least, check_in_range
from .base import (
    CLASSIFICATION_LOSS_REGISTRY,
    ClassificationLoss,
    alpha_weights,
    check_alpha,
    loss_alpha_from_config,
    positive_pairs,
)
from .functional import float32_or_wider, sigmoid_focal_loss_from_labels
from .ranked_nms import dependency_closure, nms_in_rank_order

__all__ = ["OHEMCrossEntropyLoss", "select_hard_examples"]

# The most anchors decided to learn the fate of positives far down the loss ranking; a larger
# set (a low NMS threshold) is left to deciding the ranking in order.
_CLOSURE_LIMIT = 2048


@CLASSIFICATION_LOSS_REGISTRY.register()
class OHEMCrossEntropyLoss(ClassificationLoss):
    """
    Sigmoid cross entropy over the hard examples of each image only (section 5.1, Table 1d):
    every anchor is scored by its loss (summed over the K classes), non-maximum suppression over
    the anchor boxes in order of that loss removes near-duplicates, and the loss is summed over
    the highest-loss anchors that remain; all other anchors get no classification loss. The box
    loss still covers every foreground anchor, and FocalRetinaNet still divides by the number
    of foreground anchors (as SSD's hard negative mining does).

    With a positive fraction f > 0 (the paper's "1:3" is f = 0.25), at most f * B positives are
    taken and at most (1 - f) / f negatives per positive, SSD-style (an image without positives
    then contributes no classification loss); with f < 0 ("no ratio") the B highest-loss anchors
    are taken whatever their class.
    """

    @configurable
    def __init__(
        self,
        *,
        batch_size_per_image: int = 128,
        positive_fraction: float = 0.25,
        nms_thresh: float = 0.7,
        alpha=-1.0,
        compiled: bool = True,
    ):
        """
        Args:
            batch_size_per_image: B, the number of anchors kept per image.
            positive_fraction: f in (0, 1], the largest share of positives, which also fixes
                the negatives per positive at (1 - f) / f; negative for no ratio.
            nms_thresh: IoU above which a lower-loss anchor is suppressed; 1 disables the NMS.
            alpha: alpha-balancing of the cross entropy (negative: none; or one per class).
            compiled: run the cross entropy of the kept anchors through the compiled kernel.
        """
        super().__init__()
        check_at_least("MODEL.FOCAL_RETINA.OHEM.BATCH_SIZE_PER_IMAGE", batch_size_per_image, 1)
        if positive_fraction >= 0:
            check_in_range(
                "MODEL.FOCAL_RETINA.OHEM.POSITIVE_FRACTION", positive_fraction, 0, 1, low_open=True
            )
        check_in_range("MODEL.FOCAL_RETINA.OHEM.NMS_THRESH", nms_thresh, 0, 1)
        check_alpha(alpha)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.nms_thresh = nms_thresh
        self.alpha = alpha
        self.compiled = compiled

    @classmethod
    def from_config(cls, cfg):
        ohem = cfg.MODEL.FOCAL_RETINA.OHEM
        return {
            "batch_size_per_image": ohem.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": ohem.POSITIVE_FRACTION,
            "nms_thresh": ohem.NMS_THRESH,
            "alpha": loss_alpha_from_config(cfg),
            "compiled": cfg.MODEL.FOCAL_RETINA.COMPILE,
        }

    @torch.jit.unused  # training only: scripting (Detectron2\'s scripting_with_instances) compiles inference
    def forward(self, pred_logits: Tensor, gt_labels: Tensor, anchors: Tensor) -> Tensor:
        num_classes = pred_logits.shape[-1]
        with torch.no_grad():
            anchor_losses = _cross_entropy_per_anchor(
                float32_or_wider(pred_logits), gt_labels, self.alpha
            )
            selected = torch.stack(
                [
                    select_hard_examples(
                        losses,
                        labels,
                        anchors,
                        self.batch_size_per_image,
                        self.positive_fraction,
                        self.nms_thresh,
                        background=num_classes,
                    )
                    for losses, labels in zip(anchor_losses, gt_labels)
                ]
            )
        labels = torch.where(selected, gt_labels, -1)  # not selected: ignored
        return sigmoid_focal_loss_from_labels(
            pred_logits.reshape(-1, num_classes),
            labels.reshape(-1),
            self.alpha,
            0.0,
            self.compiled,
        )

    def extra_repr(self) -> str:
        return (
            f"batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction}, nms_thresh={self.nms_thresh}, "
            f"alpha={self.alpha}"
        )


def _cross_entropy_per_anchor(logits: Tensor, labels: Tensor, alpha) -> Tensor:
    """(N, R, K) logits, (N, R) labels -> (N, R) cross entropy summed over the K classes."""
    positive = positive_pairs(labels, logits.shape[-1])
    losses = F.softplus(torch.where(positive, -logits, logits))  # -log p_t
    alpha_t = alpha_weights(positive, alpha, losses)
    if alpha_t is not None:
        losses = losses * alpha_t
    return losses.sum(dim=-1)


def select_hard_examples(
    losses: Tensor,
    labels: Tensor,
    boxes: Tensor,
    batch_size: int,
    positive_fraction: float,
    nms_thresh: float,
    background: int,
) -> Tensor:
    """
    Choose one image's hard examples (see :class:`OHEMCrossEntropyLoss`).

    Args:
        losses: (R,) each anchor's loss.
        labels: (R,) each anchor's class, `background`, or -1 (ignored: never chosen).
        boxes: (R, 4) the anchors, XYXY.
        batch_size, positive_fraction, nms_thresh: B, f (negative: no ratio) and the NMS IoU.

    Returns:
        (R,) bool: the chosen anchors.

    The result is that of NMS over every valid anchor in descending loss order (ties: in index
    order, as torchvision's CPU NMS breaks them), without its R x R cost (R is ~10^5 on COCO).
    Greedy NMS keeps or drops an anchor by looking only at anchors of higher loss, so the
    anchors are decided in loss order, in bounded chunks (:mod:`.ranked_nms`), from the top
    4 B down, doubling, until the batch is settled. When an image has fewer than f B positives,
    the batch also needs the fate of every positive, however low its loss: those are decided
    together with only the anchors that their fate depends on
    (:func:`~.ranked_nms.dependency_closure`), not with every anchor of higher loss; when those
    are more than 2048 (a low NMS threshold), by deciding the ranking in order down to them.
    Memory stays bounded either way; time is that of full NMS in the second case.
    """
    valid = (labels >= 0).nonzero().squeeze(1)
    order = valid[losses[valid].argsort(descending=True, stable=True)]
    ranked_boxes = boxes[order]  # rank r: the anchor of the r-th highest loss
    ranked_positive = labels[order] != background
    positive_ranks = ranked_positive.nonzero().squeeze(1)
    kept = positive_ranks[:0]
    decided, num_candidates = 0, min(len(order), 4 * batch_size)
    closure_limit = _CLOSURE_LIMIT
    while True:
        new_ranks = torch.arange(decided, num_candidates, device=boxes.device)
        kept = nms_in_rank_order(ranked_boxes, kept, new_ranks, nms_thresh)
        decided = num_candidates
        later_positives = positive_ranks[positive_ranks >= decided]
        if (
            closure_limit
            and len(later_positives)
            and _waiting_for_positives_only(ranked_positive[kept], batch_size, positive_fraction)
        ):
            closure = dependency_closure(
                ranked_boxes, later_positives, decided, nms_thresh, closure_limit
            )
            closure_limit = 0  # one try: a larger `decided` would find much the same closure
            if closure is not None:
                later_kept = nms_in_rank_order(ranked_boxes, kept, closure, nms_thresh)
                later_kept = later_kept[len(kept) :]
                # The negatives below rank `decided` are not all decided: only positives join.
                # The batch is then settled (the negatives suffice, whatever the positives).
                kept = torch.cat([kept, later_kept[ranked_positive[later_kept]]])
                later_positives = later_positives[:0]
        chosen, settled = _take_batch(
            kept, ranked_positive[kept], batch_size, positive_fraction, len(later_positives) == 0
        )
        if settled or decided == len(order):
            break
        num_candidates = min(len(order), 2 * num_candidates)
    selected = torch.zeros_like(labels, dtype=torch.bool)
    selected[order[chosen]] = True
    return selected


def _num_negatives(num_positives: int, batch_size: int, positive_fraction: float) -> int:
    """At most (1 - f) / f negatives per positive, and B in all."""
    negatives_per_positive = (1 - positive_fraction) / positive_fraction
    return min(
        batch_size - num_positives, math.floor(num_positives * negatives_per_positive + 1e-6)
    )


def _waiting_for_positives_only(
    kept_positive: Tensor, batch_size: int, positive_fraction: float
) -> bool:
    """
    With a ratio, whether the anchors kept so far (`kept_positive`: which are positives) hold
    fewer than f B positives but the negatives for any number of positives up to f B.
    """
    if positive_fraction < 0:
        return False
    num_positives = int(kept_positive.sum())
    max_positives = int(batch_size * positive_fraction)
    most_negatives = max(
        _num_negatives(p, batch_size, positive_fraction)
        for p in range(num_positives, max_positives + 1)
    )
    num_negatives = len(kept_positive) - num_positives
    return num_positives < max_positives and num_negatives >= most_negatives


def _take_batch(
    kept: Tensor,
    kept_positive: Tensor,
    batch_size: int,
    positive_fraction: float,
    covers_positives: bool,
):
    """
    The batch from the NMS survivors of the highest-loss candidates (in descending loss order),
    and whether it is settled: whether NMS over more candidates (all of lower loss) could not
    change it. `covers_positives`: the fate of every positive anchor is known.
    """
    if positive_fraction < 0:
        return kept[:batch_size], len(kept) >= batch_size
    max_positives = int(batch_size * positive_fraction)
    positives = kept[kept_positive][:max_positives]
    negatives = kept[~kept_positive]
    num_negatives = _num_negatives(len(positives), batch_size, positive_fraction)
    positives_settled = covers_positives or len(positives) == max_positives
    settled = positives_settled and len(negatives) >= num_negatives
    return torch.cat([positives, negatives[:num_negatives]]), settled
