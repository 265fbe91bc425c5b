"""NMS decided in bounded chunks and through dependency closures (retina_plugin.losses.ranked_nms),
and OHEM's selection built on it, against torchvision's NMS over every box at once, on
adversarial boxes: dense clusters, tied scores, IoUs exactly at the threshold, positives far
down the ranking, fewer survivors than the batch."""

import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, pairwise_iou
from torchvision.ops import nms

from retina_plugin.losses import select_hard_examples
from retina_plugin.losses.ranked_nms import dependency_closure, iou_above, nms_in_rank_order
from tests.losses.ohem_reference import select_with_full_nms


def _grid_boxes(num_boxes, cells, seed):
    """Boxes with corners on a grid of quarter pixels in a small square: many exact IoU ties
    with thresholds such as 0.5 (e.g. a box and the box of half its area inside it)."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, cells, (num_boxes, 2), generator=generator).float() / 4
    sizes = torch.randint(1, cells, (num_boxes, 2), generator=generator).float() / 4
    return torch.cat([corners, corners + sizes], dim=1)


def _ranked(boxes):
    """Rank-order scores without ties: torchvision's NMS then decides in index order."""
    return torch.arange(len(boxes), 0, -1, dtype=torch.float32)


def _full_nms(boxes, nms_thresh):
    return nms(boxes, _ranked(boxes), nms_thresh)


def _empty():
    return torch.zeros(0, dtype=torch.int64)


def test_iou_above_at_the_threshold():
    boxes = torch.tensor([[0.0, 0, 10, 10]])
    # IoU 100 / 200 = 0.5 exactly (not above 0.5), 100 / 190 and 0.
    others = torch.tensor([[0.0, 0, 10, 20], [0, 0, 10, 19], [20, 20, 30, 30]])
    assert iou_above(boxes, others, 0.5).tolist() == [[False, True, False]]
    assert iou_above(boxes, others, 0.0).tolist() == [[True, True, False]]
    # IoU 1.5 / 5 rounds to the float32 nearest 0.3, which lies above the double 0.3: torchvision's
    # CPU NMS suppresses the pair at 0.3, and so must iou_above.
    pair = torch.tensor([[9.25, 8.5, 10.75, 11.5], [9.0, 9.5, 10.0, 11.5]])
    assert iou_above(pair[:1], pair[1:], 0.3).tolist() == [[True]]
    assert nms(pair, torch.tensor([2.0, 1.0]), 0.3).tolist() == [0]


@pytest.mark.parametrize("nms_thresh", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_in_chunks_equals_nms_over_all_boxes(nms_thresh):
    # 5000 boxes crowded on a 10 x 10 px square: three chunks, most boxes suppressed by earlier
    # chunks' survivors, and IoUs exactly at 0.5.
    boxes = _grid_boxes(5000, 40, seed=0)
    kept = nms_in_rank_order(boxes, _empty(), torch.arange(len(boxes)), nms_thresh)
    assert kept.tolist() == _full_nms(boxes, nms_thresh).tolist()


def test_nms_fed_in_uneven_runs_equals_nms_over_all_boxes():
    boxes = _grid_boxes(3000, 200, seed=1)
    kept = _empty()
    for start, end in [(0, 1), (1, 7), (7, 2100), (2100, 2101), (2101, 3000)]:
        kept = nms_in_rank_order(boxes, kept, torch.arange(start, end), 0.5)
    assert kept.tolist() == _full_nms(boxes, 0.5).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_dependency_closure_decides_its_seeds_as_full_nms(seed):
    generator = torch.Generator().manual_seed(seed)
    boxes = _grid_boxes(4000, 400, seed=seed)
    start = 300
    seeds = torch.randperm(len(boxes) - start, generator=generator)[:20].sort().values + start
    prefix_kept = nms_in_rank_order(boxes, _empty(), torch.arange(start), 0.5)
    closure = dependency_closure(boxes, seeds, start, 0.5, len(boxes))
    assert set(seeds.tolist()) <= set(closure.tolist())
    assert len(closure) < len(boxes) - start  # not everything below `start`
    kept = set(nms_in_rank_order(boxes, prefix_kept, closure, 0.5).tolist())
    expected = set(_full_nms(boxes, 0.5).tolist())
    assert [s in kept for s in seeds.tolist()] == [s in expected for s in seeds.tolist()]
    # The closure holds every box of higher rank that overlaps a member above the threshold.
    members = set(closure.tolist())
    overlap = iou_above(boxes[closure], boxes[start:], 0.5)
    above = torch.arange(start, len(boxes))[None, :] < closure[:, None]
    assert set(((overlap & above).nonzero()[:, 1] + start).tolist()) <= members


# --- OHEM's selection against NMS over every valid anchor ---


def _selected(losses, labels, boxes, batch_size, positive_fraction, nms_thresh, k):
    chosen = select_hard_examples(
        losses, labels, boxes, batch_size, positive_fraction, nms_thresh, k
    )
    return chosen.nonzero().squeeze(1).tolist()


def _anchors_of_one_box(image_size, box):
    """RetinaNet's anchors (P3-P7, 3 scales x 3 ratios) of a square image, labelled as its
    Matcher labels them against one box of class 3 (80 classes: background 80)."""
    sizes = [[s * 2 ** (i / 3) for i in range(3)] for s in (32, 64, 128, 256, 512)]
    generator = DefaultAnchorGenerator(
        sizes=sizes, aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16, 32, 64, 128]
    )
    features = [torch.zeros(1, 1, image_size // s, image_size // s) for s in (8, 16, 32, 64, 128)]
    anchors = Boxes.cat(generator(features)).tensor
    iou = pairwise_iou(Boxes(torch.tensor([box])), Boxes(anchors))[0]
    labels = torch.full((len(anchors),), 80)
    labels[iou >= 0.5] = 3
    labels[(iou >= 0.4) & (iou < 0.5)] = -1
    return anchors, labels


@pytest.mark.parametrize("positive_fraction", [0.25, 0.5])
def test_ohem_positives_at_the_bottom_of_the_ranking(positive_fraction):
    # A late-training image: one box, its positives learned (the lowest losses of all), fewer
    # than f * B of them: the old selection ran NMS over all 12,276 anchors for them.
    anchors, labels = _anchors_of_one_box(256, [50.0, 60.0, 130.0, 120.0])
    positive = labels == 3
    assert 0 < int(positive.sum()) < 32
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(len(anchors), generator=generator) + 1
    losses[positive] = torch.rand(int(positive.sum()), generator=generator) * 0.5
    args = (losses, labels, anchors, 128, positive_fraction, 0.7, 80)
    assert _selected(*args) == select_with_full_nms(*args)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("positive_fraction", [-1.0, 0.25])
def test_ohem_tied_losses_and_crowded_boxes(seed, positive_fraction):
    # Three loss values only (ties everywhere) on 4000 boxes crowded together: most anchors
    # suppressed, fewer survivors than B, candidates doubling to every anchor.
    boxes = _grid_boxes(4000, 60, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    losses = torch.randint(0, 3, (len(boxes),), generator=generator).float()
    labels = torch.full((len(boxes),), 5)
    labels[torch.rand(len(boxes), generator=generator) < 0.005] = 1
    labels[torch.rand(len(boxes), generator=generator) < 0.1] = -1
    for batch_size in (8, 256):
        args = (losses, labels, boxes, batch_size, positive_fraction, 0.5, 5)
        assert _selected(*args) == select_with_full_nms(*args)


@pytest.mark.parametrize("seed", range(2))
def test_ohem_positives_suppressed_by_lower_ranked_chains(seed):
    # Positives deep in the ranking, under chains of overlapping negatives of higher loss:
    # their fate depends on boxes far above them.
    boxes = _grid_boxes(5000, 120, seed=seed + 10)
    generator = torch.Generator().manual_seed(seed)
    losses = torch.rand(len(boxes), generator=generator)
    labels = torch.full((len(boxes),), 2)
    deep = losses.argsort()[:15]  # the 15 lowest losses
    labels[deep] = 0
    for batch_size in (16, 128):
        args = (losses, labels, boxes, batch_size, 0.25, 0.3, 2)
        assert _selected(*args) == select_with_full_nms(*args)
