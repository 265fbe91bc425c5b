import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator

from retina_plugin import OctaveAnchorGenerator
from retina_plugin.modeling.anchor_generator import octave_anchor_sizes
from tests.utils import tiny_config

P3_TO_P7 = [ShapeSpec(channels=32, stride=2**level) for level in range(3, 8)]


def _feature_maps(image_size=(96, 160)):
    return [
        torch.zeros(1, 32, image_size[0] // s.stride + 1, image_size[1] // s.stride + 1)
        for s in P3_TO_P7
    ]


def test_octave_sizes_by_hand():
    assert octave_anchor_sizes([32], 3) == [[32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]]
    assert octave_anchor_sizes([32, 64], 1) == [[32.0], [64.0]]
    assert octave_anchor_sizes([10], 2)[0][1] == pytest.approx(14.142135623730951)


def test_same_anchors_as_detectron2_eval_based_config():
    # Detectron2's Base-RetinaNet.yaml builds its sizes with a Python eval (yaml.unsafe_load).
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(model_zoo.get_config_file("Base-RetinaNet.yaml"), allow_unsafe=True)
    reference = build_anchor_generator(d2_cfg, P3_TO_P7)

    ours = build_anchor_generator(tiny_config(), P3_TO_P7)
    assert isinstance(ours, OctaveAnchorGenerator)
    assert ours.num_cell_anchors == [9] * 5
    for ref_level, our_level in zip(reference(_feature_maps()), ours(_feature_maps())):
        assert torch.equal(ref_level.tensor, our_level.tensor)


def test_first_anchor_by_hand():
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE = 1
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]
    anchors = build_anchor_generator(cfg, P3_TO_P7)(_feature_maps())
    # Detectron2's default OFFSET 0: the first centre is (0, 0); size 32 -> half side 16.
    assert anchors[0].tensor[0].tolist() == [-16.0, -16.0, 16.0, 16.0]
    # The next P3 location is one stride (8 px) to the right.
    assert anchors[0].tensor[1].tolist() == [-8.0, -16.0, 24.0, 16.0]
    # P7: size 512 -> half side 256.
    assert anchors[4].tensor[0].tolist() == [-256.0, -256.0, 256.0, 256.0]
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.5
    anchors = build_anchor_generator(cfg, P3_TO_P7)(_feature_maps())
    # Offset 0.5: first P3 centre at half a stride, (4, 4).
    assert anchors[0].tensor[0].tolist() == [-12.0, -12.0, 20.0, 20.0]


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "BASE_SIZES",
            [32, 64, 128],
            "MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES = [32, 64, 128] has 3 entries but the head sees "
            "5 feature levels (MODEL.RETINANET.IN_FEATURES): give one base size per level.",
        ),
        (
            "BASE_SIZES",
            [32, 64, 0, 256, 512],
            "MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES = 0 is out of range: it must be >= 1.",
        ),
        (
            "SCALES_PER_OCTAVE",
            0,
            "MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE = 0 must be an integer >= 1 (the paper uses 3).",
        ),
    ],
)
def test_bad_anchor_config(key, value, message):
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.ANCHORS[key] = value
    with pytest.raises(ValueError) as error:
        build_anchor_generator(cfg, P3_TO_P7)
    assert str(error.value) == message
