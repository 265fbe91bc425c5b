"""retina_plugin.modeling.detections: hand-computed candidates and NMS, and agreement with
Detectron2's RetinaNet post-processing."""

import torch
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes

from retina_plugin.modeling.detections import batched_nms, decode_detections, top_candidates
from tests.utils import tiny_config


def test_top_candidates_by_hand():
    # 3 anchors x 2 classes; flat indices 0..5 row by row.
    scores = torch.tensor([[0.9, 0.2], [0.4, 0.7], [0.05, 0.7]])
    top, index = top_candidates(scores, score_thresh=0.3, topk=3)
    # Above 0.3: 0.9 (0), 0.4 (2), 0.7 (3), 0.7 (5); the best 3, equal scores in index order.
    assert top.tolist() == [0.8999999761581421, 0.699999988079071, 0.699999988079071]
    assert index.tolist() == [0, 3, 5]
    top, index = top_candidates(scores, score_thresh=0.3, topk=10)  # fewer than topk pass
    assert index.tolist() == [0, 3, 5, 2]
    top, index = top_candidates(scores, score_thresh=0.95, topk=2)  # none pass
    assert top.shape == (0,) and index.shape == (0,) and index.dtype == torch.int64


def test_top_candidates_orders_equal_scores_by_index():
    scores = torch.full((50, 3), 0.25)
    _, index = top_candidates(scores, score_thresh=0.1, topk=7)
    assert index.tolist() == list(range(7))


def test_batched_nms_by_hand():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # A
            [1, 0, 11, 10],  # B: IoU(A, B) = 90 / 110 = 0.818
            [0, 0, 10, 10],  # C: A's box, another class
            [20, 20, 30, 30],  # D: apart
            [0, 0, 10, 10],  # E: A's box and class and score, later index
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.8, 0.9, 0.5, 0.6, 0.8])
    classes = torch.tensor([0, 0, 1, 0, 0])
    # B suppresses A and E (class 0, IoU 0.82 > 0.5); C is class 1; D overlaps nothing.
    assert batched_nms(boxes, scores, classes, 0.5, num_classes=2).tolist() == [1, 3, 2]
    # At IoU 0.9, B no longer suppresses A; A and E are equal: the first (A) keeps, E goes.
    assert batched_nms(boxes, scores, classes, 0.9, num_classes=2).tolist() == [1, 0, 3, 2]


def test_decode_detections_equals_detectron2_retinanet():
    """Many candidates (every score kept) through Detectron2's own inference_single_image."""
    cfg = tiny_config()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 300
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    sizes = [(16, 20), (8, 10), (4, 5)]  # feature maps of a 128 x 160 image at P3..P5
    anchors, scores, deltas = [], [], []
    for (h, w), stride in zip(sizes, (8, 16, 32)):
        centers = torch.rand(h * w * 9, 2, generator=generator) * torch.tensor([160.0, 128.0])
        half = torch.rand(h * w * 9, 2, generator=generator) * stride * 2 + 2
        anchors.append(torch.cat([centers - half, centers + half], dim=1))
        scores.append(torch.rand(h * w * 9, 3, generator=generator))
        deltas.append(torch.randn(h * w * 9, 4, generator=generator) * 0.2)
    expected = RetinaNet.inference_single_image(
        model, [Boxes(a) for a in anchors], scores, deltas, (128, 160)
    )
    boxes, top, classes = decode_detections(
        anchors, scores, deltas, model.box2box_transform, num_classes=3, score_thresh=0.0,
        topk_candidates=300, nms_thresh=0.5, max_detections=100,
    )  # fmt: skip
    assert len(expected) == 100
    assert torch.equal(boxes, expected.pred_boxes.tensor)
    assert torch.equal(top, expected.scores)
    assert torch.equal(classes, expected.pred_classes)


def test_class_agnostic_nms_by_hand():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.8, 0.9, 0.6])
    classes = torch.tensor([0, 1, 1])
    # Per class: A (class 0) and B (class 1) both stay; across classes B (IoU 0.82) removes A.
    assert batched_nms(boxes, scores, classes, 0.5, num_classes=2).tolist() == [1, 0, 2]
    assert batched_nms(boxes, scores, classes, 0.5, 2, class_agnostic=True).tolist() == [1, 2]


def test_per_class_score_thresholds_by_hand():
    # 3 anchors x 3 classes; per class thresholds 0.5, 0.1, 0.9 in place of one of 0.3.
    scores = torch.tensor([[0.6, 0.2, 0.95], [0.4, 0.05, 0.8], [0.3, 0.15, 0.5]])
    top, index = top_candidates(scores, 0.3, topk=10, class_thresh=torch.tensor([0.5, 0.1, 0.9]))
    # Passing: 0.6 (0, class 0), 0.2 (1, class 1), 0.95 (2, class 2), 0.15 (7, class 1).
    assert index.tolist() == [2, 0, 1, 7]
    _, index = top_candidates(scores, 0.3, topk=10)
    assert index.tolist() == [2, 5, 0, 8, 3]  # 0.95, 0.8, 0.6, 0.5, 0.4 (0.3 is not above 0.3)


def _model_detections(*opts):
    cfg = tiny_config()
    cfg.merge_from_list(["MODEL.RETINANET.NUM_CLASSES", 2, *opts])
    model = build_model(cfg).eval()
    anchors = [Boxes(torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]]).float())]
    scores = [torch.tensor([[0.8, 0.3], [0.1, 0.9], [0.2, 0.04]])]
    deltas = [torch.zeros(3, 4)]  # the boxes are the anchors
    result = model.inference_single_image(anchors, scores, deltas, (40, 40))
    return list(zip(result.scores.tolist(), result.pred_classes.tolist()))


def test_the_options_through_the_model_config():
    s09, s08, s02, s004 = (
        0.8999999761581421,
        0.800000011920929,
        0.20000000298023224,
        0.03999999910593033,
    )
    # SCORE_THRESH_TEST 0.05, per class: 0.8 removes 0.1 (class 0), 0.9 removes 0.3 (class 1).
    assert _model_detections() == [(s09, 1), (s08, 0), (s02, 0)]
    per_class = ["MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS", [0.5, 0.01]]
    assert _model_detections(*per_class) == [(s09, 1), (s08, 0), (s004, 1)]
    # Across classes the 0.9 box (anchor 1) also removes anchor 0's 0.8 box (IoU 0.82).
    agnostic = ["MODEL.FOCAL_RETINA.TEST.CLASS_AGNOSTIC_NMS", True]
    assert _model_detections(*agnostic) == [(s09, 1), (s02, 0)]
