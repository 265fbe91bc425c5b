"""
Greedy non-maximum suppression over boxes already sorted by score, a bounded number at a time.

Shape shorthand: R boxes in rank order (rank 0 has the highest score); C boxes of a chunk.

Greedy NMS keeps a box unless a kept box of higher rank overlaps it with IoU above the threshold,
so a box's fate depends only on the higher-ranked boxes that overlap it. The boxes can therefore
be decided in chunks, in rank order: a chunk first loses the boxes that the boxes kept so far
suppress, then torchvision's NMS among what is left decides the rest. No call holds more than a
chunk's NMS and a block of IoU values, where torchvision's CUDA NMS over all R boxes holds an
(R, R / 64) mask of 8-byte words (1.8 GB at R = 120,000), and the boxes kept are those of NMS over
all R at once. A box far down the ranking can be decided without deciding everything above it:
:func:`dependency_closure` finds the boxes its fate depends on.
"""

import math
from typing import Optional

import torch
from detectron2.layers import nms
from torch import Tensor

__all__ = ["dependency_closure", "iou_above", "nms_in_rank_order"]

# Boxes per torchvision NMS call: its CUDA mask is then 2048^2 / 8 bytes = 512 KiB, and the
# chunk's scores (2048, 2047, ..., 1) are exact even in float16.
_CHUNK = 2048
# IoU values computed at once: 16 MiB per float32 temporary.
_PAIRS = 2**22


def iou_above(boxes: Tensor, others: Tensor, nms_thresh: float) -> Tensor:
    """
    (C, 4) and (H, 4) XYXY boxes -> (C, H) bool: whether IoU(boxes[i], others[j]) > nms_thresh.

    Decided as torchvision's NMS kernel of the boxes' device decides it, also for a pair exactly
    at the threshold: the IoU in the float operations of that kernel, in their order (areas
    (x2 - x1) * (y2 - y1); inter / (area_i + area_j - inter)), compared as the kernel compares
    (see :func:`_threshold_as_compared`). (Its CUDA build may fuse a multiply-add, so there a
    pair within a rounding of the threshold may be decided differently, as CUDA and CPU NMS
    themselves may differ.)
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    low = torch.maximum(boxes[:, None, :2], others[None, :, :2])  # (C, H, 2)
    high = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    extent = (high - low).clamp(min=0)
    inter = extent[..., 0] * extent[..., 1]  # (C, H)
    iou = inter / (other_area[None, :] + area[:, None] - inter)
    return iou > _threshold_as_compared(nms_thresh, boxes)


def _threshold_as_compared(nms_thresh: float, boxes: Tensor) -> float:
    """
    The threshold t' of the boxes' dtype for which `iou > t'` decides as torchvision's kernel.
    Its CPU kernel compares the float IoU with the double threshold t, which for a float x is
    x > (the largest float <= t); its CUDA kernel compares with t rounded to the nearest float,
    which is what torch does with a Python float. (For t = 0.3: 1.5 / 5 rounds to 0.3 as a
    float32, which lies above the double 0.3.)
    """
    if boxes.device.type != "cpu":
        return nms_thresh
    threshold = torch.tensor(nms_thresh, dtype=torch.float64)
    rounded = threshold.to(boxes.dtype)
    if rounded.double() > threshold:
        rounded = torch.nextafter(rounded, torch.tensor(-math.inf, dtype=boxes.dtype))
    return rounded.item()


def _suppressed_by(boxes: Tensor, kept_boxes: Tensor, nms_thresh: float) -> Tensor:
    """(C, 4), (H, 4) -> (C,) bool: overlapped above the threshold by one of `kept_boxes`."""
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for block in kept_boxes.split(max(1, _PAIRS // max(1, len(boxes)))):
        suppressed |= iou_above(boxes, block, nms_thresh).any(dim=1)
    return suppressed


def nms_in_rank_order(boxes: Tensor, kept: Tensor, ranks: Tensor, nms_thresh: float) -> Tensor:
    """
    Continue greedy NMS over more boxes.

    Args:
        boxes: (R, 4) XYXY, in rank order.
        kept: (k,) int64, ascending: the ranks that NMS has kept so far.
        ranks: (n,) int64, ascending: the ranks to decide now. Each must lie below (in rank) all
            ranks decided so far, and every higher rank that overlaps one of them must have been
            decided already or be among them: a run of consecutive ranks that continues the ones
            decided so far, or the ranks returned by :func:`dependency_closure`.
        nms_thresh: IoU above which the lower-ranked box of a pair is suppressed.

    Returns:
        (k + m,) int64: `kept` followed by the m of `ranks` that NMS keeps, ascending.
    """
    for chunk in ranks.split(_CHUNK):
        if len(kept):
            chunk = chunk[~_suppressed_by(boxes[chunk], boxes[kept], nms_thresh)]
        # Scores that restate the rank order: torchvision's NMS sorts by score.
        scores = torch.arange(len(chunk), 0, -1, dtype=boxes.dtype, device=boxes.device)
        kept = torch.cat([kept, chunk[nms(boxes[chunk], scores, nms_thresh)]])
    return kept


def dependency_closure(
    boxes: Tensor, seeds: Tensor, start: int, nms_thresh: float, limit: int
) -> Optional[Tensor]:
    """
    The ranks >= `start` on which NMS's decision about the `seeds` depends: the seeds, the
    higher-ranked boxes that overlap one of them above the threshold, those that overlap these,
    and so on. Ranks below `start` are taken as decided already.

    Args:
        boxes: (R, 4) XYXY, in rank order.
        seeds: (s,) int64 ranks >= start.
        start: the first rank not decided yet.
        nms_thresh: the NMS IoU threshold.
        limit: the most ranks worth finding; beyond it, deciding every rank in order is likely
            cheaper (e.g. a low threshold: chains of overlaps then reach much of the image).

    Returns:
        (c,) int64, ascending: ranks that :func:`nms_in_rank_order` can decide after the ranks
        below `start`, deciding each seed as NMS over all R boxes would; None if c > limit.
    """
    member = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    member[seeds] = True
    frontier, count = seeds, len(seeds)
    while len(frontier) and count <= limit:
        reached = _overlapping_higher(boxes, frontier, start, nms_thresh)
        frontier = (reached & ~member).nonzero().squeeze(1)
        member |= reached
        count += len(frontier)
    return member[start:].nonzero().squeeze(1) + start if count <= limit else None


def _overlapping_higher(boxes: Tensor, targets: Tensor, start: int, nms_thresh: float) -> Tensor:
    """(R,) bool: the ranks in [start, R) above one of `targets` that overlap it."""
    reached = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    end = int(targets.max())  # ranks from `end` on are above no target
    region = boxes[targets]
    # An IoU above a threshold >= 0 needs an intersection: only the boxes that meet the region
    # that the targets span can have one with a target.
    meets = (boxes[start:end, :2] < region[:, 2:].amax(dim=0)) & (
        boxes[start:end, 2:] > region[:, :2].amin(dim=0)
    )
    candidates = meets.all(dim=1).nonzero().squeeze(1) + start
    for block in targets.split(max(1, _PAIRS // max(1, len(candidates)))):
        overlap = iou_above(boxes[candidates], boxes[block], nms_thresh)  # (c, b)
        reached[candidates] |= (overlap & (candidates[:, None] < block[None, :])).any(dim=1)
    return reached
