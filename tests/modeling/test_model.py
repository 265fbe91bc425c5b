import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from retina_plugin import FocalRetinaNet, SigmoidFocalLoss
from tests.utils import random_batch, tiny_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(tiny_config())


def _instances(boxes, classes, size=(100, 100)):
    instances = Instances(size)
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return instances


def test_built_from_config(model):
    assert isinstance(model, FocalRetinaNet)
    assert isinstance(model.classification_loss, SigmoidFocalLoss)
    assert (model.classification_loss.alpha, model.classification_loss.gamma) == (0.25, 2.0)
    assert model.num_classes == 3


def test_label_anchors_iou_bands(model):
    # One 10x10 box at the origin; anchors chosen so their IoU with it is 0.3, 0.45, 0.6, 1.
    gt = _instances([[0, 0, 10, 10]], [2])
    anchors = Boxes(
        torch.tensor(
            [
                [0.0, 0.0, 10.0, 3.0],  # IoU 0.30 < 0.4: background (label K = 3)
                [0.0, 0.0, 10.0, 4.5],  # IoU 0.45 in [0.4, 0.5): ignored (-1)
                [0.0, 0.0, 10.0, 6.0],  # IoU 0.60 >= 0.5: foreground, class 2
                [0.0, 0.0, 10.0, 10.0],  # IoU 1
                [50.0, 50.0, 60.0, 60.0],  # IoU 0
            ]
        )
    )
    labels, matched_boxes = model.label_anchors([anchors], [gt])
    assert labels[0].tolist() == [3, -1, 2, 2, 3]
    assert matched_boxes[0][2].tolist() == [0.0, 0.0, 10.0, 10.0]


def test_label_anchors_low_quality_match(model):
    # A box whose best anchor has IoU 0.3 still gets that anchor (Detectron2's low-quality match).
    gt = _instances([[0, 0, 10, 10]], [1])
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 3.0], [50.0, 50.0, 60.0, 60.0]]))
    labels, _ = model.label_anchors([anchors], [gt])
    assert labels[0].tolist() == [1, 3]


def test_image_without_annotations(model):
    model.train()
    batch = random_batch((0, 0), size=(96, 128))
    with EventStorage():
        losses = model(batch)
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_training_step_decreases_loss(model):
    model.train()
    batch = random_batch((3, 2), num_classes=3, size=(96, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with EventStorage() as storage:
        before = sum(model(batch).values()).item()
        for _ in range(5):
            del model.loss_normalizer  # so every step below starts from the same EMA state
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        del model.loss_normalizer
        after = sum(model(batch).values()).item()
        assert storage.history("num_pos_anchors").latest() > 0
    assert after < 0.98 * before


@pytest.mark.parametrize("bad_class", [3, -1, 7])
def test_ground_truth_class_out_of_range(model, bad_class):
    model.train()
    batch = random_batch((2, 1), num_classes=3, size=(96, 128))
    batch[1]["instances"].gt_classes[0] = bad_class
    batch[1]["image_id"] = 42
    with EventStorage(), pytest.raises(ValueError) as error:
        model(batch)
    assert str(error.value) == (
        f"Image image_id=42 has ground-truth class id(s) [{bad_class}] outside "
        "[0, MODEL.RETINANET.NUM_CLASSES = 3). Set NUM_CLASSES to the dataset's number of "
        "categories, or map its category ids to 0 .. NUM_CLASSES - 1."
    )


def test_inference_output_format(model):
    model.eval()
    batch = [{"image": torch.zeros(3, 96, 128), "height": 48, "width": 64}]
    with torch.no_grad():
        (result,) = model(batch)
    instances = result["instances"]
    assert instances.image_size == (48, 64)
    assert len(instances) <= 100 and set(instances.get_fields()) == {
        "pred_boxes",
        "scores",
        "pred_classes",
    }
    assert (instances.scores > 0.05).all()


def test_channels_last_same_losses_and_checkpoint():
    cfg = tiny_config()  # from Base-FocalRetina.yaml, which turns CHANNELS_LAST on
    assert cfg.MODEL.FOCAL_RETINA.CHANNELS_LAST
    torch.manual_seed(0)
    nhwc = build_model(cfg)
    cfg.MODEL.FOCAL_RETINA.CHANNELS_LAST = False
    nchw = build_model(cfg)
    nchw.load_state_dict(nhwc.state_dict())
    weight = nhwc.head.cls_score.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert nchw.head.cls_score.weight.is_contiguous()
    batch = random_batch((3, 1), num_classes=3, size=(96, 128))
    with EventStorage():
        losses = [model.train()(batch) for model in (nhwc, nchw)]
    for name in ("loss_cls", "loss_box_reg"):
        assert losses[0][name].item() == pytest.approx(losses[1][name].item(), rel=1e-5)
