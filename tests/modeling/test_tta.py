"""FocalRetinaNetWithTTA: one view is plain inference; a flipped view's boxes come back
mirrored; views are merged by per-class NMS; train_net.py --eval-only evaluates with and
without TTA."""

import json

import pytest
import torch
from detectron2.modeling import build_model

from retina_plugin import load_config
from retina_plugin.modeling import FocalRetinaNetWithTTA
from retina_plugin.modeling.detections import batched_nms
from tests.utils import QUICKSTART, parse, run_main


def _model(*opts):
    cfg = load_config(QUICKSTART, ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.SCORE_THRESH_TEST",
                                   "0.0", *opts])  # fmt: skip
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def _image(height=64, width=80):
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(3, height, width, generator=generator) * 255).round().to(torch.uint8)


def _detect(model, image):
    with torch.no_grad():
        return model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])[0][
            "instances"
        ]


def test_one_view_is_plain_inference_merged_by_nms():
    """One view at the input's own size: the plain detections (boxes clipped to the image), then
    the merge's per-class NMS, which clipping can make remove a few more."""
    cfg, model = _model("TEST.AUG.MIN_SIZES", "(64,)", "TEST.AUG.FLIP", "False")
    image = _image()
    plain = _detect(model, image)
    keep = batched_nms(plain.pred_boxes.tensor, plain.scores, plain.pred_classes, 0.5, 8)
    actual = _detect(FocalRetinaNetWithTTA(cfg, model), image)
    assert len(plain) > 50 and len(actual) == len(keep)  # every score kept
    assert torch.equal(actual.pred_boxes.tensor, plain.pred_boxes.tensor[keep])
    assert torch.equal(actual.scores, plain.scores[keep])
    assert torch.equal(actual.pred_classes, plain.pred_classes[keep])


def test_flipped_view_is_mirrored_back_and_merged_by_nms():
    cfg, model = _model("TEST.AUG.MIN_SIZES", "(64,)", "TEST.AUG.FLIP", "True")
    image = _image()
    plain = _detect(model, image)
    flipped = _detect(model, image.flip(-1))
    mirrored = flipped.pred_boxes.tensor.clone()
    mirrored[:, [0, 2]] = 80 - flipped.pred_boxes.tensor[:, [2, 0]]  # x -> W - x
    boxes = torch.cat([plain.pred_boxes.tensor, mirrored])
    scores = torch.cat([plain.scores, flipped.scores])
    classes = torch.cat([plain.pred_classes, flipped.pred_classes])
    keep = batched_nms(boxes, scores, classes, 0.5, num_classes=8)[:100]
    actual = _detect(FocalRetinaNetWithTTA(cfg, model), image)
    # The view's image is flipped by Detectron2's transform (numpy): the network's floats may
    # differ in the last bits from those of image.flip(-1).
    torch.testing.assert_close(actual.pred_boxes.tensor, boxes[keep], rtol=0, atol=1e-4)
    torch.testing.assert_close(actual.scores, scores[keep], rtol=0, atol=1e-6)
    assert torch.equal(actual.pred_classes, classes[keep])
    assert actual.image_size == (64, 80)


def test_only_focal_retinanet():
    cfg = load_config(QUICKSTART, ["MODEL.META_ARCHITECTURE", "RetinaNet", "MODEL.DEVICE", "cpu"])
    with pytest.raises(TypeError, match="FocalRetinaNetWithTTA needs a FocalRetinaNet, got "):
        FocalRetinaNetWithTTA(cfg, build_model(cfg))


def test_eval_only_with_and_without_tta(tiny_trained, tmp_path):
    _, opts, _ = tiny_trained
    results = run_main(parse(
        "--eval-only", "--config-file", QUICKSTART, *opts, "OUTPUT_DIR", str(tmp_path),
        "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 64, 80)", "TEST.AUG.MAX_SIZE", "160",
    ))  # fmt: skip
    assert list(results) == ["bbox", "bbox_TTA"]
    assert list(results["bbox_TTA"]) == list(results["bbox"])
    assert results["bbox_TTA"] != results["bbox"]
    with open(tmp_path / "final_results.json") as f:
        assert list(json.load(f)) == ["bbox", "bbox_TTA"]
    assert (tmp_path / "inference_TTA").is_dir()
