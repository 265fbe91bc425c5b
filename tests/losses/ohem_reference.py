"""OHEM's selection rule written plainly, the reference the tests compare
retina_plugin.losses.select_hard_examples with."""

import math

import torch
from torchvision.ops import nms


def select_with_full_nms(losses, labels, boxes, batch_size, positive_fraction, nms_thresh, k):
    """NMS over every valid anchor (label >= 0) by loss, then the batch: at most
    batch_size * positive_fraction positives (label != k) and negatives up to the ratio; all
    kept anchors in loss order when positive_fraction < 0. Sorted anchor indices."""
    valid = (labels >= 0).nonzero().squeeze(1)
    kept = valid[nms(boxes[valid], losses[valid], nms_thresh)]
    if positive_fraction < 0:
        chosen = kept[:batch_size]
    else:
        positive = labels[kept] != k
        positives = kept[positive][: int(batch_size * positive_fraction)]
        ratio = (1 - positive_fraction) / positive_fraction
        num_negatives = min(batch_size - len(positives), math.floor(len(positives) * ratio + 1e-6))
        chosen = torch.cat([positives, kept[~positive][:num_negatives]])
    return sorted(chosen.tolist())
