"""bfloat16 autocast on the CPU: oneDNN's wrong weight gradient for a conv whose stride exceeds
its input (the NaN that made tests/test_safe_load.py fail inside the full suite), and the cure."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from retina_plugin.modeling.autocast import keep_float32_where_bfloat16_conv_fails
from tests.utils import random_batch, tiny_config


def _weight_grad(conv, x, grad_output, dtype=None):
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        y = conv(x)
    y.float().backward(grad_output)
    return y.dtype, conv.weight.grad.clone()


def _relative_error(x, reference):
    return ((x - reference).norm() / reference.norm()).item()


def _p7_like(seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(64, 64, 3, stride=2, padding=1)


def test_bfloat16_weight_grad_of_stride_beyond_input_is_wrong_in_torch():
    # What torch itself computes: P7 of a 64 px image (a 1 x 1 input, stride 2).
    generator = torch.Generator().manual_seed(0)
    conv = _p7_like()
    x = torch.randn(4, 64, 1, 1, generator=generator).bfloat16()
    grad_output = torch.randn(4, 64, 1, 1, generator=generator) * 1e-3
    _, reference = _weight_grad(conv, x.float(), grad_output)
    wrong = 0
    for _ in range(8):
        _, grad = _weight_grad(conv, x, grad_output, torch.bfloat16)
        wrong += not _relative_error(grad, reference) < 0.02
    if not wrong:
        pytest.skip(
            f"torch {torch.__version__} computes this weight gradient right: "
            "keep_float32_where_bfloat16_conv_fails may no longer be needed"
        )
    assert wrong >= 1


@pytest.mark.parametrize("width", [1, 2])
def test_narrow_strided_conv_runs_in_float32(width):
    generator = torch.Generator().manual_seed(1)
    conv = _p7_like()
    keep_float32_where_bfloat16_conv_fails(conv)
    x = torch.randn(4, 64, 3, width, generator=generator).bfloat16()
    out_width = (width + 2 - 3) // 2 + 1
    grad_output = torch.randn(4, 64, 2, out_width, generator=generator) * 1e-3
    _, reference = _weight_grad(conv, x.float(), grad_output)
    for _ in range(8):
        dtype, grad = _weight_grad(conv, x, grad_output, torch.bfloat16)
        if width == 1:  # stride 2 > width 1: float32, exactly the float32 gradient
            assert dtype == torch.float32
            torch.testing.assert_close(grad, reference, rtol=1e-6, atol=0)
        else:  # stride 2 <= width 2: bfloat16 as autocast makes it, and right
            assert dtype == torch.bfloat16
            assert _relative_error(grad, reference) < 0.02  # bfloat16 rounding
    assert conv._float32_contexts == [] and not torch.is_autocast_enabled("cpu")


def test_float32_without_autocast_is_unchanged():
    conv = _p7_like()
    keep_float32_where_bfloat16_conv_fails(conv)
    x = torch.randn(2, 64, 1, 1)
    assert conv(x).dtype == torch.float32
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, 2, 1))


def _gradients(model, batch):
    model.zero_grad()
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {name: loss.item() for name, loss in losses.items()}, grads


def test_amp_training_gradients_stay_finite_at_64px():
    # P6 is 1 px wide at 64 px, so P7's weight gradient is the one oneDNN gets wrong in bfloat16
    # (before the cure, 1e22 or more in most calls, and the next step's loss NaN).
    cfg = tiny_config()
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.SOLVER.AMP.ENABLED = True
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_batch(num_boxes=(3, 2), num_classes=3, size=(64, 64))
    model.amp_dtype = None
    losses, grads = _gradients(model, batch)
    model.amp_dtype = "bfloat16"
    for _ in range(5):
        amp_losses, amp_grads = _gradients(model, batch)
        assert amp_losses == pytest.approx(losses, rel=0.2)  # random weights, bfloat16
        for name, grad in amp_grads.items():
            assert torch.isfinite(grad).all(), name
            # P7's gradient is tiny here (GroupNorm over one value per group), so compare norms.
            assert 0.5 < grad.norm() / grads[name].norm() < 2, name
