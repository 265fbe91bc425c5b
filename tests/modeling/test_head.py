import math

import pytest
import torch
from detectron2.layers import ShapeSpec

from retina_plugin import FocalRetinaHead, build_retina_head
from tests.utils import tiny_config

LEVELS = [ShapeSpec(channels=32, stride=2**level) for level in range(3, 8)]


def test_output_shapes_and_initialisation():
    cfg = tiny_config()  # K = 3 classes, A = 9 anchors, 2 convs of 32 channels
    torch.manual_seed(0)
    head = build_retina_head(cfg, LEVELS)
    assert isinstance(head, FocalRetinaHead)
    features = [torch.randn(2, 32, 16 // 2**i + 1, 20 // 2**i + 1) for i in range(5)]
    logits, deltas = head(features)
    for feature, level_logits, level_deltas in zip(features, logits, deltas):
        height, width = feature.shape[-2:]
        assert level_logits.shape == (2, 9 * 3, height, width)
        assert level_deltas.shape == (2, 9 * 4, height, width)
    # b = -log((1 - pi) / pi) with pi = 0.01.
    assert torch.allclose(head.cls_score.bias, torch.full((27,), -math.log(99)))
    assert torch.count_nonzero(head.bbox_pred.bias) == 0
    convs = [head.cls_subnet[0], head.cls_subnet[2], head.bbox_subnet[0], head.cls_score]
    weights = torch.cat([conv.weight.flatten() for conv in convs])
    assert weights.mean().abs() < 1e-3 and weights.std().item() == pytest.approx(0.01, rel=0.05)


def test_prior_probability_gives_initial_score():
    cfg = tiny_config()
    cfg.MODEL.RETINANET.PRIOR_PROB = 0.05
    head = build_retina_head(cfg, LEVELS)
    logits, _ = head([torch.zeros(1, 32, 4, 4)] * 5)
    # Zero features: the subnet outputs are zero and every score is the prior pi.
    assert torch.allclose(logits[0].sigmoid(), torch.full_like(logits[0], 0.05))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("NUM_CLASSES", 0, "MODEL.RETINANET.NUM_CLASSES = 0 is out of range: it must be >= 1."),
        (
            "PRIOR_PROB",
            0.0,
            "MODEL.RETINANET.PRIOR_PROB = 0.0 is out of range: it must lie in (0, 1).",
        ),
        (
            "PRIOR_PROB",
            1.0,
            "MODEL.RETINANET.PRIOR_PROB = 1.0 is out of range: it must lie in (0, 1).",
        ),
    ],
)
def test_bad_head_config(key, value, message):
    cfg = tiny_config()
    cfg.MODEL.RETINANET[key] = value
    with pytest.raises(ValueError) as error:
        build_retina_head(cfg, LEVELS)
    assert str(error.value) == message


def test_different_anchor_counts_per_level():
    cfg = tiny_config()
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0], [0.5, 1.0, 2.0], [1.0], [1.0], [1.0]]
    with pytest.raises(ValueError) as error:
        build_retina_head(cfg, LEVELS)
    assert str(error.value).startswith(
        "The anchor generator gives [3, 9, 3, 3, 3] anchors per location on the levels "
        "['p3', 'p4', 'p5', 'p6', 'p7']; the head is shared across levels"
    )


def test_unknown_head_name_lists_registered_ones():
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.HEAD_NAME = "NoSuchHead"
    with pytest.raises(ValueError) as error:
        build_retina_head(cfg, LEVELS)
    assert str(error.value) == (
        "MODEL.FOCAL_RETINA.HEAD_NAME = 'NoSuchHead' is not registered in RETINA_HEAD; "
        "known: FocalRetinaHead."
    )
