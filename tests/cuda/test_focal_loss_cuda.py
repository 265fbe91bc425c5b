"""The focal loss on CUDA (compiled by Inductor into Triton kernels, and eager) against fvcore's
sigmoid_focal_loss, for float32 and float16 logits. Skipped without CUDA (tools/gpu_check.py runs
them on a GPU).

Tolerances: losses 1e-5 relative (the loss is computed in float32 from any input, so float16
inputs give fvcore's float32 loss of the same values); float32 gradients 1e-5 relative plus 1e-6
of the largest; float16 gradients equal fvcore's float32 gradient rounded to float16 within one
float16 step (1e-3 relative, 1e-7 absolute for the subnormals).
"""

import logging

import pytest
import torch
from fvcore.nn import sigmoid_focal_loss as fvcore_focal_loss
from torch.nn import functional as F

from retina_plugin import compile as compile_module
from retina_plugin import sigmoid_focal_loss
from retina_plugin.benchmark.loss_speed import LossProblem, loss_inputs
from retina_plugin.losses.functional import (
    _focal_loss_rows_and_grad_from_labels,
    sigmoid_focal_loss_from_labels,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ALPHA, GAMMA = 0.25, 2.0
DTYPES = [torch.float32, torch.float16]


def _problem(dtype, anchors=20000, classes=80, seed=0):
    """COCO-like (M, K) logits in `dtype` and (M,) labels on CUDA (loss_speed.loss_inputs)."""
    logits, labels = loss_inputs(LossProblem(anchors, classes, "cuda"), seed)
    return logits.to(dtype), labels


def _fvcore_from_labels(logits, labels, alpha=ALPHA, gamma=GAMMA):
    """Detectron2's RetinaNet.losses in float32: valid anchors, one-hot targets, fvcore's loss.
    Returns (loss, gradient with respect to `logits`)."""
    x = logits.detach().float().clone().requires_grad_()
    valid = labels >= 0
    targets = F.one_hot(labels[valid], x.shape[1] + 1)[:, :-1].float()
    loss = fvcore_focal_loss(x[valid], targets, alpha, gamma, reduction="sum")
    loss.backward()
    return loss.detach(), x.grad


def _assert_grad_close(grad, expected):
    if grad.dtype == torch.float16:
        # fvcore's float32 gradient rounded to float16, within one float16 step.
        torch.testing.assert_close(grad.float(), expected.half().float(), rtol=1e-3, atol=1e-7)
    else:
        scale = expected.abs().max().item()
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_from_labels_matches_fvcore(dtype, compiled):
    logits, labels = _problem(dtype)
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss_from_labels(x, labels, ALPHA, GAMMA, compiled=compiled)
    loss.backward()
    expected, expected_grad = _fvcore_from_labels(logits, labels)
    assert loss.dtype == torch.float32 and loss.device.type == "cuda"
    assert x.grad.dtype == dtype
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    _assert_grad_close(x.grad, expected_grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dense_matches_fvcore(dtype):
    logits, labels = _problem(dtype)
    targets = F.one_hot(labels.clamp(min=0), logits.shape[1] + 1)[:, :-1].to(dtype)
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss(x, targets, ALPHA, GAMMA, reduction="sum")
    loss.backward()
    reference = logits.detach().float().clone().requires_grad_()
    expected = fvcore_focal_loss(reference, targets.float(), ALPHA, GAMMA, reduction="sum")
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=0)
    _assert_grad_close(x.grad, reference.grad)


def test_compiled_kernel_across_alpha_and_gamma():
    # An ablation sweep in one process: the settings are kernel inputs, not baked-in constants
    # (on the CPU, torch 2.14's compiled kernel once got the third setting wrong).
    logits, labels = _problem(torch.float32, anchors=5000, classes=8, seed=3)
    for alpha, gamma in [(0.25, 2.0), (0.75, 0.0), (0.5, 5.0), (-1.0, 1.0), (0.25, 0.5)]:
        loss = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma)
        expected, _ = _fvcore_from_labels(logits, labels, alpha, gamma)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 2.0])
def test_from_labels_finite_at_saturated_logits(compiled, gamma):
    # As tests/losses on the CPU: anchor 0 is class 0, anchor 1 background, anchor 2 ignored.
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0], [100.0, 100.0]], device="cuda")
    logits.requires_grad_()
    labels = torch.tensor([0, 2, -1], device="cuda")
    loss = sigmoid_focal_loss_from_labels(logits, labels, 0.25, gamma, compiled)
    loss.backward()
    # Only the wrongly confident background pair counts: alpha_t * CE = 0.75 * 100, gradient 0.75.
    assert loss.item() == pytest.approx(75.0)
    assert logits.grad.tolist() == [[0.0, 0.0], [0.0, 0.75], [0.0, 0.0]]


def test_fvcore_gradient_is_nan_where_ours_is_finite():
    logits = torch.tensor([20.0], device="cuda", requires_grad=True)
    targets = torch.tensor([1.0], device="cuda")
    fvcore_focal_loss(logits, targets, 0.25, 0.5).sum().backward()
    assert torch.isnan(logits.grad).all()
    logits.grad = None
    sigmoid_focal_loss(logits, targets, 0.25, 0.5).sum().backward()
    assert logits.grad.item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.skipif(not compile_module._ENABLED, reason="RETINA_PLUGIN_COMPILE=0")
def test_focal_loss_compiles_on_cuda(caplog, monkeypatch):
    """The compiled path really compiles here (Triton needs a C compiler and Python's headers
    at run time): a fallback to eager is logged by maybe_compile, and none may be."""
    # train_net's logger set-up (if run before in this process) stops "retina_plugin" records.
    monkeypatch.setattr(logging.getLogger("retina_plugin"), "propagate", True)
    kernel = compile_module.maybe_compile(_focal_loss_rows_and_grad_from_labels, "focal loss")
    logits, labels = _problem(torch.float32, anchors=3000, classes=8, seed=5)
    constants = torch.tensor([0.25, 0.75, 2.0], device="cuda").unbind()
    with caplog.at_level("WARNING", logger="retina_plugin.compile"):
        rows, grad = kernel(logits, labels, *constants)
    fallbacks = [r.getMessage() for r in caplog.records if r.name == "retina_plugin.compile"]
    assert fallbacks == []
    expected_rows, expected_grad = _focal_loss_rows_and_grad_from_labels(logits, labels, *constants)
    torch.testing.assert_close(rows, expected_rows, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
