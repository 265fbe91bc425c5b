"""FocalRetinaNet on CUDA against the same model on the CPU: one training step with each loss of
the family in float32 and under float16 and bfloat16 autocast (SOLVER.AMP.ENABLED with
MODEL.FOCAL_RETINA.AMP_DTYPE), and inference. Tiny ResNet-18-FPN (tests.utils.tiny_config), small
images. Skipped without CUDA (tools/gpu_check.py runs them on a GPU).

Tolerances, with TF32 off on CUDA (torch.backends.cuda.matmul.allow_tf32 and
torch.backends.cudnn.allow_tf32 False): float32 losses equal the CPU's to 1e-4 relative (cuDNN
and the CPU's kernels add in other orders); autocast losses lie within 5% of the CPU's float32
ones; detections: same classes, scores within 1e-5, boxes within 1e-3 px.
"""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from retina_plugin.benchmark import tf32_disabled
from tests.utils import random_batch, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

LOSS_NAMES = [
    "SigmoidFocalLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "OHEMCrossEntropyLoss",
]
# MODEL.FOCAL_RETINA.AMP_DTYPE of the CUDA model; None: float32, no autocast.
PRECISIONS = {"float32": None, "float16-amp": "float16", "bfloat16-amp": "bfloat16"}
# Relative tolerance of a CUDA loss against the CPU's float32 loss.
LOSS_RTOL = {None: 1e-4, "float16": 0.05, "bfloat16": 0.05}


def _model(loss_name: str, device: str, amp_dtype=None):
    cfg = tiny_config()
    cfg.MODEL.DEVICE = device
    cfg.MODEL.FOCAL_RETINA.LOSS_NAME = loss_name
    cfg.SOLVER.AMP.ENABLED = amp_dtype is not None
    if amp_dtype is not None:
        cfg.MODEL.FOCAL_RETINA.AMP_DTYPE = amp_dtype
    torch.manual_seed(0)
    return build_model(cfg)


def _cpu_and_cuda_models(loss_name: str, amp_dtype=None):
    """The same weights on the CPU (float32) and on CUDA (`amp_dtype` autocast or float32)."""
    cpu_model = _model(loss_name, "cpu")
    cuda_model = _model(loss_name, "cuda", amp_dtype)
    cuda_model.load_state_dict(cpu_model.state_dict())
    return cpu_model, cuda_model


def _training_step(model, batch):
    """({loss name: value}, {parameter name: gradient}) of one forward + backward."""
    model.train()
    model.zero_grad(set_to_none=True)
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.item() for k, v in losses.items()}, grads


@pytest.mark.parametrize("amp_dtype", PRECISIONS.values(), ids=PRECISIONS.keys())
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_training_step_matches_cpu(loss_name, amp_dtype):
    batch = random_batch((3, 2), num_classes=3, size=(96, 128))
    cpu_model, cuda_model = _cpu_and_cuda_models(loss_name, amp_dtype)
    expected, _ = _training_step(cpu_model, batch)
    with tf32_disabled():
        losses, grads = _training_step(cuda_model, batch)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert losses["loss_cls"] > 0
    assert all(g.device.type == "cuda" and torch.isfinite(g).all() for g in grads.values())
    assert grads["head.cls_score.weight"].abs().sum() > 0
    for key, value in expected.items():
        assert losses[key] == pytest.approx(value, rel=LOSS_RTOL[amp_dtype]), (
            key,
            losses,
            expected,
        )


def _detections(model, image):
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 96, "width": 128}])
    return result["instances"].to("cpu")


def test_inference_matches_cpu():
    cpu_model, cuda_model = _cpu_and_cuda_models("SigmoidFocalLoss")
    # Random weights score every anchor near the prior 0.01; classification weights of std 0.3
    # and no bias spread the 100 best scores over 0.67-0.79 (1.7e-5 apart at least, on the CPU),
    # so that no near-tie decides which detections are kept or their order.
    generator = torch.Generator().manual_seed(1)
    cls_score = cpu_model.head.cls_score
    with torch.no_grad():
        cls_score.weight.copy_(torch.randn(cls_score.weight.shape, generator=generator) * 0.3)
        cls_score.bias.zero_()
    cuda_model.load_state_dict(cpu_model.state_dict())
    image = random_batch((0,), size=(96, 128), seed=4)[0]["image"]
    expected = _detections(cpu_model, image)
    with tf32_disabled():
        actual = _detections(cuda_model, image)
    assert len(expected) == 100
    assert len(actual) == len(expected)
    assert torch.equal(actual.pred_classes, expected.pred_classes)
    torch.testing.assert_close(actual.scores, expected.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        actual.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-3
    )
