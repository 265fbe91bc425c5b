import math

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss as fvcore_focal_loss
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from retina_plugin import sigmoid_focal_loss
from retina_plugin.losses.functional import sigmoid_focal_loss_from_labels

# FL = -alpha_t (1 - p_t)^gamma log(p_t), p = sigmoid(x), worked out by hand:
# x = 0, y = 1: 0.25 * 0.5^2 * ln 2; x = 0, y = 0: 0.75 * 0.5^2 * ln 2;
# x = 2, y = 1: 0.25 * (1 - s(2))^2 * ln(1 + e^-2); x = 2, y = 0: 0.75 * s(2)^2 * ln(1 + e^2).
HAND_COMPUTED = [
    # (x, y, alpha, gamma, FL)
    (0.0, 1.0, 0.25, 2.0, 0.25 * 0.25 * math.log(2)),
    (0.0, 0.0, 0.25, 2.0, 0.75 * 0.25 * math.log(2)),
    (2.0, 1.0, 0.25, 2.0, 0.0004508907088100953),
    (2.0, 0.0, 0.25, 2.0, 1.2375586345660556),
    (-1.0, 1.0, 0.25, 0.5, 0.28071613264005035),
    (3.0, 0.0, -1.0, 0.0, math.log(1 + math.exp(3))),  # no alpha, gamma 0: plain CE
]


@pytest.mark.parametrize("x, y, alpha, gamma, expected", HAND_COMPUTED)
def test_hand_computed_values(x, y, alpha, gamma, expected):
    loss = sigmoid_focal_loss(
        torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64), alpha, gamma
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def _random_problem(shape=(300, 7), dtype=torch.float32, scale=4.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=generator) * scale).to(dtype).requires_grad_()
    targets = (torch.rand(shape, generator=generator) < 0.2).to(dtype)
    return logits, targets


@pytest.mark.parametrize("reference", [fvcore_focal_loss, torchvision_focal_loss])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.75, 0.0), (-1.0, 1.0), (0.5, 5.0)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_reference_implementations(reference, alpha, gamma, reduction):
    logits, targets = _random_problem()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    theirs = reference(logits, targets, alpha, gamma, reduction)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-5, atol=1e-7)


def test_soft_targets_match_fvcore():
    logits, _ = _random_problem()
    targets = torch.rand(logits.shape, generator=torch.Generator().manual_seed(3))
    ours = sigmoid_focal_loss(logits, targets, 0.25, 2.0, "sum")
    theirs = fvcore_focal_loss(logits, targets, 0.25, 2.0, "sum")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    grads = [torch.autograd.grad(loss, logits)[0] for loss in (ours, theirs)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_saturated_logits(gamma, dtype):
    # Confident logits, right and wrong, for positives and negatives.
    logits = torch.tensor([-100.0, -30.0, -17.0, 17.0, 30.0, 100.0] * 2, dtype=dtype)
    targets = torch.tensor([0.0] * 6 + [1.0] * 6, dtype=dtype)
    logits.requires_grad_()
    loss = sigmoid_focal_loss(logits, targets, 0.25, gamma)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # Easy examples (x=-100, y=0 and x=100, y=1) contribute neither loss nor gradient ...
    for easy in (0, 11):
        assert loss[easy].item() == pytest.approx(0, abs=1e-30)
        assert logits.grad[easy].item() == pytest.approx(0, abs=1e-30)
    # ... and badly wrong ones have the CE gradient: alpha_t * (p - y) = 0.75 and -0.25.
    assert logits.grad[5].item() == pytest.approx(0.75)
    assert logits.grad[6].item() == pytest.approx(-0.25)


def test_fvcore_gradient_is_nan_where_ours_is_finite():
    # The reason our loss exists: fvcore (like torchvision) returns NaN gradients here.
    logits = torch.tensor([20.0], requires_grad=True)
    targets = torch.tensor([1.0])
    fvcore_focal_loss(logits, targets, 0.25, 0.5).sum().backward()
    assert torch.isnan(logits.grad).all()
    logits.grad = None
    sigmoid_focal_loss(logits, targets, 0.25, 0.5).sum().backward()
    assert logits.grad.item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_float64_gradcheck(gamma):
    logits, targets = _random_problem(shape=(20, 3), dtype=torch.float64, scale=3.0)
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_loss(x, targets, 0.25, gamma, "none"), (logits,)
    )
    soft = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, soft, 0.4, gamma), (logits,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(dtype):
    logits, targets = _random_problem(dtype=dtype)
    loss = sigmoid_focal_loss(logits, targets, 0.25, 0.5, "sum")
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    expected = sigmoid_focal_loss(logits.detach().float(), targets.float(), 0.25, 0.5, "sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_under_cpu_autocast_is_float32():
    logits, targets = _random_problem()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sigmoid_focal_loss(logits, targets, reduction="sum")
    expected = sigmoid_focal_loss(logits, targets, reduction="sum")
    assert loss.dtype == torch.float32 and loss.item() == expected.item()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"reduction": "avg"},
            "sigmoid_focal_loss: reduction='avg'; expected one of ('none', 'mean', 'sum')",
        ),
        ({"gamma": -1.0}, "sigmoid_focal_loss: gamma=-1.0 must be >= 0"),
        (
            {"alpha": 1.5},
            "sigmoid_focal_loss: alpha = 1.5 is out of range: alpha must lie in [0, 1], or be "
            "negative (e.g. -1) to disable alpha-balancing.",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    logits, targets = _random_problem(shape=(4, 2))
    with pytest.raises(ValueError) as error:
        sigmoid_focal_loss(logits, targets, **kwargs)
    assert str(error.value) == message


def test_shape_mismatch():
    with pytest.raises(
        ValueError, match=r"inputs \(4, 2\) and targets \(4, 3\) must have the same shape"
    ):
        sigmoid_focal_loss(torch.zeros(4, 2), torch.zeros(4, 3))


def _labels_problem(num_anchors=500, num_classes=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(num_anchors, num_classes, generator=generator) * 4).requires_grad_()
    # -1 ignored, 0..K-1 foreground, K background
    labels = torch.randint(-1, num_classes + 1, (num_anchors,), generator=generator)
    labels[torch.rand(num_anchors, generator=generator) < 0.6] = num_classes
    return logits, labels


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (0.75, 0.0)])
def test_from_labels_equals_dense_fvcore_path(compiled, alpha, gamma):
    # Detectron2's path: gather the valid anchors, one-hot targets without the background column.
    logits, labels = _labels_problem()
    valid = labels >= 0
    targets = torch.nn.functional.one_hot(labels[valid], num_classes=7)[:, :6].float()
    expected = fvcore_focal_loss(logits[valid], targets, alpha, gamma, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, logits)
    loss = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma, compiled=compiled)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert grad[~valid].abs().max().item() == 0.0  # ignored anchors get no gradient


def test_from_labels_hand_computed():
    # Two anchors, K = 2, logits 0: anchor 0 is class 1, anchor 1 background; label -1 ignored.
    logits = torch.zeros(3, 2, requires_grad=True)
    loss = sigmoid_focal_loss_from_labels(logits, torch.tensor([1, 2, -1]), 0.25, 2.0)
    # One positive pair (0.25 * 0.25 * ln 2) and three negative pairs (0.75 * 0.25 * ln 2).
    assert loss.item() == pytest.approx((0.25 + 3 * 0.75) * 0.25 * math.log(2), rel=1e-6)
    loss.backward()
    # dFL/dx at x = 0: (1-p_t)^2 * [(p - y) + 2 (1 - 2y) p ce] * alpha_t with p = 1/2, ce = ln 2.
    positive = 0.25 * 0.25 * (-0.5 - 2 * 0.5 * math.log(2))
    negative = 0.75 * 0.25 * (0.5 + 2 * 0.5 * math.log(2))
    expected = torch.tensor([[negative, positive], [negative, negative], [0.0, 0.0]])
    torch.testing.assert_close(logits.grad, expected)


def test_from_labels_bad_shapes():
    with pytest.raises(ValueError) as error:
        sigmoid_focal_loss_from_labels(torch.zeros(4, 2), torch.zeros(3, dtype=torch.int64))
    assert str(error.value) == (
        "sigmoid_focal_loss_from_labels: logits (4, 2) must be (M, K) and labels (3,) (M,)"
    )


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 2.0])
def test_from_labels_finite_at_saturated_logits(compiled, gamma):
    # Anchor 0 is class 0, anchor 1 background, anchor 2 ignored; logits up to +-100.
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0]], requires_grad=True)
    loss = sigmoid_focal_loss_from_labels(logits, torch.tensor([0, 2, -1]), 0.25, gamma, compiled)
    loss.backward()
    # Only the wrongly confident background pair (x = 100, y = 0) counts: alpha_t * CE = 0.75 * 100,
    # gradient alpha_t * (p - y) = 0.75; the easy pairs give 0, the ignored anchor nothing.
    assert loss.item() == pytest.approx(75.0)
    assert logits.grad.tolist() == [[0.0, 0.0], [0.0, 0.75], [0.0, 0.0]]


def test_compiled_kernels_across_alpha_and_gamma():
    # One process, several (alpha, gamma) in turn, as an ablation sweep does: with alpha and gamma
    # as Python floats, torch 2.14's compiled kernel got the third setting wrong by 0.5.
    logits, labels = _labels_problem(seed=7)
    valid = labels >= 0
    targets = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes=7)[:, :6].float()
    for alpha, gamma in [(0.25, 2.0), (0.75, 0.0), (0.5, 5.0), (-1.0, 1.0), (0.25, 0.5)]:
        expected = fvcore_focal_loss(logits, targets, alpha, gamma)
        dense = sigmoid_focal_loss(logits, targets, alpha, gamma)
        torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-6)
        from_labels = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma)
        torch.testing.assert_close(from_labels, expected[valid].sum(), rtol=1e-5, atol=0)
