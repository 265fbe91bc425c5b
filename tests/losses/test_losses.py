"""The loss family of issue 5: cross entropy, FL*, softmax focal loss, OHEM, per-class alpha and
the class-frequency prior, against hand-computed values and reference implementations."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from retina_plugin import (
    OHEMCrossEntropyLoss,
    SigmoidCrossEntropyLoss,
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    sigmoid_focal_loss,
)
from retina_plugin.losses import select_hard_examples
from retina_plugin.modeling.priors import class_frequency_priors, classification_bias
from tests.losses.ohem_reference import select_with_full_nms
from tests.utils import random_batch, tiny_config


def softplus(x):
    return math.log1p(math.exp(x))


# One anchor of class 0 with K = 2: logits 2 (its class) and -1 (the other class).
LOGITS = torch.tensor([[[2.0, -1.0]]])
LABELS = torch.tensor([[0]])


def test_cross_entropy_hand_computed():
    # CE = -log sigmoid(2) - log(1 - sigmoid(-1)) = softplus(-2) + softplus(-1).
    plain = SigmoidCrossEntropyLoss(alpha=-1.0, compiled=False)(LOGITS, LABELS)
    assert plain.item() == pytest.approx(softplus(-2) + softplus(-1), rel=1e-6)
    balanced = SigmoidCrossEntropyLoss(alpha=0.75, compiled=False)(LOGITS, LABELS)
    assert balanced.item() == pytest.approx(0.75 * softplus(-2) + 0.25 * softplus(-1), rel=1e-6)


def test_cross_entropy_matches_torch_and_ignores_label_minus_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(-1, 5, (2, 50), generator=generator)
    loss = SigmoidCrossEntropyLoss(alpha=-1.0, compiled=False)(logits, labels)
    valid = labels >= 0
    targets = F.one_hot(labels[valid], 5)[:, :4].to(logits.dtype)
    reference = F.binary_cross_entropy_with_logits(logits[valid], targets, reduction="sum")
    assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
    (grad,) = torch.autograd.grad(loss, logits)
    (reference_grad,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(grad, reference_grad)


def test_fl_star_hand_computed():
    # gamma 2, beta 1: positive x_t = 2 -> softplus(-5) / 2; negative x_t = 1 -> softplus(-3) / 2.
    loss = SigmoidFocalLossStar(alpha=-1.0, gamma=2.0, beta=1.0)(LOGITS, LABELS)
    assert loss.item() == pytest.approx((softplus(-5) + softplus(-3)) / 2, rel=1e-6)
    balanced = SigmoidFocalLossStar(alpha=0.25, gamma=4.0, beta=0.0)(LOGITS, LABELS)
    expected = (0.25 * softplus(-8) + 0.75 * softplus(-4)) / 4
    assert balanced.item() == pytest.approx(expected, rel=1e-6)


def test_fl_star_with_gamma_1_beta_0_is_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 30, 3, generator=generator) * 4
    labels = torch.randint(-1, 4, (2, 30), generator=generator)
    fl_star = SigmoidFocalLossStar(alpha=-1.0, gamma=1.0, beta=0.0)(logits, labels)
    ce = SigmoidCrossEntropyLoss(alpha=-1.0, compiled=False)(logits, labels)
    assert fl_star.item() == pytest.approx(ce.item(), rel=1e-5)


def test_fl_star_inference_score_is_its_p_star():
    loss = SigmoidFocalLossStar(gamma=2.0, beta=1.0)
    logits = torch.tensor([-3.0, 0.0, 2.0])
    scores = loss.class_scores(logits)
    torch.testing.assert_close(scores, torch.sigmoid(2 * logits + 1))


def _softmax_focal_reference(logits, labels, alpha, gamma):
    """The textbook formula, one anchor at a time."""
    total = 0.0
    background = logits.shape[-1] - 1
    for x, label in zip(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)):
        if label < 0:
            continue
        p_t = torch.softmax(x.double(), 0)[label].item()
        alpha_t = 1.0 if alpha < 0 else (1 - alpha if label == background else alpha)
        total += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
    return total


def test_softmax_focal_loss_hand_computed():
    # K = 2 and background: logits (1, 2, 0); one anchor of class 1, one of background.
    logits = torch.tensor([[[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]]])
    labels = torch.tensor([[1, 2]])
    z = math.e + math.e**2 + 1
    p_class, p_background = math.e**2 / z, 1 / z
    expected = -0.25 * (1 - p_class) ** 2 * math.log(p_class) - 0.75 * (
        1 - p_background
    ) ** 2 * math.log(p_background)
    loss = SoftmaxFocalLoss(alpha=0.25, gamma=2.0)(logits, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (0.75, 5.0)])
def test_softmax_focal_loss_matches_reference(alpha, gamma):
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 20, 4, generator=generator) * 3
    labels = torch.randint(-1, 4, (2, 20), generator=generator)
    loss = SoftmaxFocalLoss(alpha=alpha, gamma=gamma)(logits, labels)
    assert loss.item() == pytest.approx(
        _softmax_focal_reference(logits, labels, alpha, gamma), rel=1e-5
    )


def test_softmax_focal_loss_gamma_0_is_cross_entropy():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 40, 6, generator=generator)
    labels = torch.randint(-1, 6, (3, 40), generator=generator)
    loss = SoftmaxFocalLoss(alpha=-1.0, gamma=0.0)(logits, labels)
    reference = F.cross_entropy(
        logits.reshape(-1, 6), labels.reshape(-1), ignore_index=-1, reduction="sum"
    )
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_softmax_focal_loss_gradients_finite_where_p_t_is_1():
    # p_t rounds to 1 and gamma < 1: (1 - p_t)^gamma has an infinite derivative if taken naively.
    logits = torch.tensor([[[100.0, -100.0, -100.0], [-100.0, -100.0, 100.0]]], requires_grad=True)
    labels = torch.tensor([[0, 2]])
    loss = SoftmaxFocalLoss(alpha=0.25, gamma=0.5)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(0.0, abs=1e-30)


def test_softmax_focal_loss_gradcheck():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 1, 2, -1, 2, 1]])
    loss = SoftmaxFocalLoss(alpha=0.25, gamma=0.5)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))


def test_softmax_inference_scores_are_the_foreground_probabilities():
    logits = torch.tensor([[2.0, -1.0, 0.5, 30.0], [0.0, 0.0, 0.0, 0.0]])
    scores = SoftmaxFocalLoss().class_scores(logits)
    torch.testing.assert_close(scores, torch.softmax(logits, -1)[:, :3])


def test_per_class_alpha_equals_one_alpha_per_column():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 64, 3, generator=generator) * 3
    labels = torch.randint(-1, 4, (1, 64), generator=generator)
    alphas = (0.1, 0.5, 0.9)
    loss = SigmoidFocalLoss(alpha=alphas, gamma=2.0, compiled=False)(logits, labels)
    valid = labels[0] >= 0
    targets = F.one_hot(labels[0][valid], 4)[:, :3].float()
    expected = sum(
        sigmoid_focal_loss(logits[0][valid][:, k], targets[:, k], alphas[k], 2.0, "sum")
        for k in range(3)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_class_alpha_from_config():
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.CLASS_ALPHAS = [0.1, 0.5, 0.9]
    model = build_model(cfg)
    assert model.classification_loss.alpha == (0.1, 0.5, 0.9)


# --- OHEM ---
# Anchors 0 and 1 overlap with IoU 100 / 110 = 0.91; 2 and 3 overlap nothing; 4 is ignored.
BOXES = torch.tensor(
    [[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 10, 10.5]],
    dtype=torch.float32,
)
ANCHOR_LOSSES = torch.tensor([4.0, 5.0, 3.0, 1.0, 10.0])
ANCHOR_LABELS = torch.tensor([0, 2, 2, 1, -1])  # K = 2: anchors 1, 2 background; 0, 3 positive


def _chosen(batch_size, positive_fraction, nms_thresh):
    selected = select_hard_examples(
        ANCHOR_LOSSES, ANCHOR_LABELS, BOXES, batch_size, positive_fraction, nms_thresh, 2
    )
    return selected.nonzero().squeeze(1).tolist()


def test_ohem_nms_then_highest_losses():
    # Loss order 1, 0, 2, 3 (4 is ignored); NMS at 0.7 drops 0 (overlaps 1, a higher loss).
    assert _chosen(2, -1.0, 0.7) == [1, 2]
    assert _chosen(3, -1.0, 0.7) == [1, 2, 3]
    # Without NMS (threshold 1) anchor 0 stays.
    assert _chosen(2, -1.0, 1.0) == [0, 1]


def test_ohem_one_to_three_ratio():
    # After NMS one positive (3) is left, so at most 3 negatives: 1 and 2.
    assert _chosen(8, 0.25, 0.7) == [1, 2, 3]
    # Without NMS: positives 0, 3 (<= 8 * 0.25 = 2), then up to 6 negatives: 1, 2.
    assert _chosen(8, 0.25, 1.0) == [0, 1, 2, 3]
    # Batch 4 at 1:3: one positive at most (the highest-loss, 0), and 3 negatives at most.
    assert _chosen(4, 0.25, 1.0) == [0, 1, 2]
    # An image without positives gets no negatives either (SSD's rule).
    no_positives = torch.tensor([2, 2, 2, 2, -1])
    selected = select_hard_examples(ANCHOR_LOSSES, no_positives, BOXES, 8, 0.25, 0.7, 2)
    assert not selected.any()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("positive_fraction", [-1.0, 0.25, 0.5])
@pytest.mark.parametrize("batch_size", [8, 64])
def test_ohem_equals_nms_over_every_anchor(seed, positive_fraction, batch_size):
    generator = torch.Generator().manual_seed(seed)
    num_anchors = 3000
    corners = torch.rand(num_anchors, 2, generator=generator) * 200
    sizes = torch.rand(num_anchors, 2, generator=generator) * 40 + 8
    boxes = torch.cat([corners, corners + sizes], dim=1)
    losses = torch.rand(num_anchors, generator=generator)
    labels = torch.full((num_anchors,), 5)
    labels[torch.rand(num_anchors, generator=generator) < 0.02] = 1  # a few positives
    labels[torch.rand(num_anchors, generator=generator) < 0.1] = -1
    selected = select_hard_examples(losses, labels, boxes, batch_size, positive_fraction, 0.5, 5)
    expected = select_with_full_nms(losses, labels, boxes, batch_size, positive_fraction, 0.5, 5)
    assert selected.nonzero().squeeze(1).tolist() == expected


def test_ohem_loss_is_cross_entropy_of_the_chosen_anchors():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 5, 2, generator=generator)
    loss = OHEMCrossEntropyLoss(
        batch_size_per_image=2, positive_fraction=-1.0, nms_thresh=0.7, compiled=False
    )
    value = loss(logits, ANCHOR_LABELS[None], BOXES)
    # Recompute which anchors are hardest from these logits, then their plain cross entropy.
    targets = F.one_hot(ANCHOR_LABELS.clamp(min=0), 3)[:, :2].float()
    per_anchor = F.binary_cross_entropy_with_logits(logits[0], targets, reduction="none").sum(1)
    chosen = select_hard_examples(per_anchor, ANCHOR_LABELS, BOXES, 2, -1.0, 0.7, 2)
    expected = (per_anchor * chosen).sum()
    assert chosen.sum() == 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


# --- priors ---


def test_class_frequency_priors_hand_computed():
    dicts = [
        {"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 1}]},
        {"annotations": [{"category_id": 0}, {"category_id": 2, "iscrowd": 1}]},
        {"annotations": []},
    ]
    # Counts (3, 1, 0) without the crowd box; add-one shares (4, 2, 1) / 7; pi * K = 0.03.
    priors = class_frequency_priors(dicts, 3, 0.01)
    torch.testing.assert_close(priors, torch.tensor([0.12, 0.06, 0.03], dtype=torch.float64) / 7)
    assert priors.mean().item() == pytest.approx(0.01)
    # Capped at 0.5: pi * K * 11 / 12 = 0.73 for the frequent class.
    capped = class_frequency_priors([{"annotations": [{"category_id": 0}] * 10}], 2, 0.4)
    assert capped.tolist() == pytest.approx([0.5, 0.8 / 12])


def test_classification_bias_sigmoid_and_softmax():
    priors = torch.tensor([0.01, 0.01, 0.01], dtype=torch.float64)
    sigmoid_bias = classification_bias(priors, background_logit=False)
    assert sigmoid_bias.tolist() == pytest.approx([-math.log(99)] * 3)
    softmax_bias = classification_bias(priors, background_logit=True)
    # Background 1 - pi, the three classes sharing pi.
    assert torch.softmax(softmax_bias, 0).tolist() == pytest.approx([0.01 / 3] * 3 + [0.99])


def test_softmax_head_has_a_background_logit_starting_at_1_minus_pi():
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.LOSS_NAME = "SoftmaxFocalLoss"
    model = build_model(cfg)
    num_anchors = model.head.bbox_pred.out_channels // 4
    assert model.head.cls_score.out_channels == num_anchors * 4  # K = 3, plus background
    bias = model.head.cls_score.bias.view(num_anchors, 4)
    probabilities = torch.softmax(bias.double(), dim=1)
    torch.testing.assert_close(
        probabilities, torch.tensor([[0.01 / 3] * 3 + [0.99]] * num_anchors, dtype=torch.float64)
    )


# --- each loss inside FocalRetinaNet ---


@pytest.mark.parametrize(
    "loss_name",
    [
        "SigmoidFocalLoss",
        "SigmoidCrossEntropyLoss",
        "SigmoidFocalLossStar",
        "SoftmaxFocalLoss",
        "OHEMCrossEntropyLoss",
    ],
)
def test_every_loss_trains_and_infers(loss_name):
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.LOSS_NAME = loss_name
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model(random_batch((3, 2), num_classes=3, size=(96, 128)))
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    grad = model.head.cls_score.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": torch.zeros(3, 96, 128), "height": 96, "width": 128}])
    instances = result["instances"]
    assert len(instances) == 100
    assert instances.pred_classes.max() < 3
    assert ((instances.scores >= 0) & (instances.scores <= 1)).all()


@pytest.mark.parametrize(
    "make_loss",
    [
        lambda alpha: SigmoidFocalLossStar(alpha=alpha, gamma=2.0, beta=1.0),
        lambda alpha: OHEMCrossEntropyLoss(
            batch_size_per_image=4,
            positive_fraction=-1.0,
            nms_thresh=1.0,
            alpha=alpha,
            compiled=False,
        ),
    ],
    ids=["FL*", "OHEM"],
)
def test_integer_minus_one_alpha_means_no_balancing(make_loss):
    # alpha = -1 written as an int (Python callers, not the config, which stores floats).
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.3], [-2.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    as_int = make_loss(-1)(logits, ANCHOR_LABELS[None], BOXES)
    as_float = make_loss(-1.0)(logits, ANCHOR_LABELS[None], BOXES)
    assert as_int.item() == as_float.item() > 0
