import math

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss as fvcore_focal_loss
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from retina_plugin import sigmoid_focal_loss

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
        ({"alpha": 1.5}, "sigmoid_focal_loss: alpha=1.5 must be in [0, 1] (or < 0 to disable)"),
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
