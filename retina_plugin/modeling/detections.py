"""
From RetinaNet's per-anchor scores and box deltas to one image's detections: the score threshold,
the per-level top-k, box decoding and per-class NMS of Detectron2's RetinaNet, written with
tensors only (no :class:`Instances`, no Python branch on a tensor's value or on a size that
depends on one), so that the same code runs eagerly in :class:`FocalRetinaNet`, traced to
TorchScript, and captured by ``torch.export`` / the ONNX exporter with dynamic image sizes.

How it stays exportable where Detectron2's own code does not:

* top-k: Detectron2 takes ``topk(min(k, n))`` of the n scores above the threshold, a size that
  depends on the data (``torch.export`` stops at the ``min``). Here the n scores are padded with
  k scores of -1 and ``topk(k)`` is taken; the pads (below any threshold in [0, 1]) are dropped
  by a second threshold. Same candidates (up to the order of equal scores).
* per-class NMS: Detectron2's ``batched_nms`` (torchvision's) branches on the number of boxes:
  for small sets (up to 1000 boxes on the CPU, 5000 on CUDA: RetinaNet's 5 x 1000 candidates)
  one NMS over boxes offset by class, else a loop over the classes present, each iteration a
  host sync on CUDA. Eager and scripted inference call it, as Detectron2's RetinaNet does (same
  detections; on CUDA one NMS instead of K loop iterations). Traced and exported graphs run one
  NMS per class id 0 .. K - 1 instead (K is fixed when the model is built): no branch on a size,
  one ONNX ``NonMaxSuppression`` per class. That loop computes what Detectron2's loop computes;
  where Detectron2 takes the offset trick, whose float32 offsets round the coordinates, a pair
  of boxes within a rounding of the IoU threshold may be decided differently.
"""

from typing import Optional

import torch
from detectron2.layers import batched_nms as detectron2_batched_nms
from detectron2.modeling.box_regression import Box2BoxTransform
from torch import Tensor
from torchvision.ops import nms

__all__ = [
    "top_candidates",
    "batched_nms",
    "decode_detections",
    "exportable_nms",
    "register_onnx_translation",
]


def _take(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for a 1-D int64 `index`. Not written ``x[index]``: torch.export assumes an
    index tensor of data-dependent length has 2 or more elements (advanced indexing broadcasts a
    length of 1) and asserts so at run time; index_select does not broadcast."""
    return x.index_select(0, index)


def _where(mask: Tensor) -> Tensor:
    return torch.nonzero(mask).squeeze(1)


def _ranking_keys(scores: Tensor) -> Tensor:
    """
    Distinct float64 keys in the order of decreasing `scores`, equal scores in increasing index
    order: ``s * (1 - i * 2^-50)`` for score s > 0 at index i < 2^26. Sorting them gives one order
    in every runtime (a sort or top-k of equal values may order them either way, and PyTorch and
    ONNX Runtime do differ; equal scores are common in a model with random weights). A float32
    s has a relative spacing of at least 2^-24 to its neighbours, more than i * 2^-50; the keys
    of equal s are 2^-50 * s, i.e. 4 float64 ulps, apart.
    """
    index = torch.arange(scores.shape[0], dtype=torch.float64, device=scores.device)
    return scores.to(torch.float64) * (1 - index * 2.0**-50)


@torch.library.custom_op("retina_plugin::nms", mutates_args=())
def exportable_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's NMS as an operator that torch.export can capture on any number of boxes.
    torchvision's own (0.29) tells torch.export that NMS keeps 2 boxes or more (its fake kernel
    asks for a data-dependent size with the default minimum of 2), so an exported program
    asserts that at run time and fails on a class with fewer than 2 detections. This operator
    runs the same NMS and declares 0 or more. ONNX: NonMaxSuppression (formats.py)."""
    return nms(boxes, scores, iou_threshold)


@exportable_nms.register_fake
def _(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


_onnx_translation_registered = False


def register_onnx_translation():
    """
    Give torch's ONNX exporter a translation of ``retina_plugin::nms``: onnxscript's own of
    ``torchvision::nms`` (one ONNX NonMaxSuppression), registered in onnxscript's registry of
    translations. ``torch.onnx.export`` reads that registry before it captures the model, so
    this runs on ``import retina_plugin.export`` (and again, for later exports, whenever the
    operator is captured); it does nothing without onnxscript.
    """
    global _onnx_translation_registered
    if _onnx_translation_registered:
        return
    try:
        from onnxscript.function_libs.torch_lib.ops.vision import torchvision_nms
        from onnxscript.function_libs.torch_lib.registration import default_registry
    except ImportError:
        return
    default_registry.register(torchvision_nms, "retina_plugin::nms")
    _onnx_translation_registered = True


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    if torch.jit.is_scripting():  # TorchScript compiles this branch only
        return nms(boxes, scores, iou_threshold)
    if torch.compiler.is_exporting():
        register_onnx_translation()
        return exportable_nms(boxes, scores, iou_threshold)
    return nms(boxes, scores, iou_threshold)  # eager, and traced to TorchScript


def top_candidates(
    scores: Tensor, score_thresh: float, topk: int, class_thresh: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    """
    The (at most `topk`) highest of `scores` (one level's (R, K) class probabilities, flattened
    to R * K) that exceed `score_thresh` (or, given `class_thresh`, the (K,) threshold of their
    class), best first, equal scores in index order, and their flat indices into (R, K).
    """
    flat = scores.flatten()
    if class_thresh is None:
        keep = _where(flat > score_thresh)
    else:
        keep = _where((scores > class_thresh).flatten())
    # Pad with topk scores of -1 so that topk candidates exist whatever the number above the
    # threshold (no size that depends on the data); equal scores are taken in index order.
    padded = torch.cat([_take(flat, keep), flat.new_full((topk,), -1.0)])
    padded_index = torch.cat([keep, keep.new_zeros(topk)])
    order = _ranking_keys(padded).topk(topk).indices
    top_scores = _take(padded, order)
    real = _take(order, _where(top_scores > -1.0))  # drop the pads (scores are >= 0)
    return _take(padded, real), _take(padded_index, real)


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    iou_threshold: float,
    num_classes: int,
    class_agnostic: bool = False,
) -> Tensor:
    """
    Per-class NMS: the indices of the boxes that no higher-scoring box of their class overlaps
    with IoU > `iou_threshold`, by decreasing score, equal scores in index order. Eager and
    scripted: Detectron2's ``batched_nms``; traced or exported: one NMS per class id in
    [0, `num_classes`) (see the module docstring). `class_agnostic`: one NMS over all boxes,
    whatever their class.
    """
    # NMS by rank, not score: with equal scores (a model with random weights has many) which box
    # suppresses which would otherwise depend on each NMS implementation's own sort.
    order = _ranking_keys(scores).argsort(descending=True)
    rank = torch.arange(order.shape[0], 0, -1, dtype=torch.float32, device=scores.device)
    boxes, classes = _take(boxes, order), _take(classes, order)
    if class_agnostic:
        return _take(order, _nms(boxes, rank, iou_threshold).sort().values)
    return _take(order, _per_class_keep(boxes, rank, classes, iou_threshold, num_classes))


def _per_class_keep(
    boxes: Tensor, rank: Tensor, classes: Tensor, iou_threshold: float, num_classes: int
) -> Tensor:
    """Per-class NMS of boxes in rank order: their kept positions, ascending."""
    if torch.jit.is_scripting():  # TorchScript compiles this branch only
        return detectron2_batched_nms(boxes, rank, classes, iou_threshold).sort().values
    if not (torch.jit.is_tracing() or torch.compiler.is_exporting()):
        return detectron2_batched_nms(boxes, rank, classes, iou_threshold).sort().values
    keep = []
    for class_id in range(num_classes):
        index = _where(classes == class_id)
        keep.append(_take(index, _nms(_take(boxes, index), _take(rank, index), iou_threshold)))
    return torch.cat(keep).sort().values


def decode_detections(
    anchors: list[Tensor],
    scores: list[Tensor],
    deltas: list[Tensor],
    box2box_transform: Box2BoxTransform,
    num_classes: int,
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    max_detections: int,
    class_thresh: Optional[Tensor] = None,
    class_agnostic: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """
    One image's detections, in the coordinates of the network's input (before any rescaling):
    boxes (D, 4) XYXY, scores (D,) and classes (D,) int64, best score first, D <= max_detections.

    Args:
        anchors: per level, (Ri, 4) anchor boxes XYXY.
        scores: per level, (Ri, K) class probabilities (the loss's ``class_scores``).
        deltas: per level, (Ri, 4) predicted box deltas.
        box2box_transform: decodes deltas into boxes (its ``scale_clamp`` bounds dw, dh).
        num_classes: K (a Python int: traced, a shape would be a tensor).
        score_thresh, topk_candidates, nms_thresh, max_detections: MODEL.RETINANET's
            SCORE_THRESH_TEST, TOPK_CANDIDATES_TEST (per level), NMS_THRESH_TEST and
            TEST.DETECTIONS_PER_IMAGE.
        class_thresh: (K,) score thresholds, one per class, in place of `score_thresh`
            (MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS); None: `score_thresh`.
        class_agnostic: one NMS over all classes (MODEL.FOCAL_RETINA.TEST.CLASS_AGNOSTIC_NMS).
    """
    all_boxes, all_scores, all_classes = [], [], []
    for anchors_i, scores_i, deltas_i in zip(anchors, scores, deltas):
        top_scores, flat_index = top_candidates(
            scores_i, score_thresh, topk_candidates, class_thresh
        )
        anchor_index = flat_index // num_classes
        boxes_i = box2box_transform.apply_deltas(
            _take(deltas_i, anchor_index), _take(anchors_i, anchor_index)
        )
        all_boxes.append(boxes_i)
        all_scores.append(top_scores)
        all_classes.append(flat_index % num_classes)
    boxes, scores_, classes = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes)
    keep = batched_nms(boxes, scores_, classes, nms_thresh, num_classes, class_agnostic)
    keep = keep[:max_detections]
    return _take(boxes, keep), _take(scores_, keep), _take(classes, keep)
