"""FocalRetinaNet against Detectron2's own RetinaNet on Detectron2's model-zoo config.

Only MODEL.META_ARCHITECTURE differs: weights load strictly, and losses, gradients and detections
agree, so Detectron2 RetinaNet checkpoints work unchanged.

On the CPU by default; RETINA_TEST_DEVICE=cuda runs the same comparisons on a GPU, with TF32 off
(tools/gpu_check.py does), so that both models compute in full float32 there too.
"""

import os

import pytest
import torch
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import EventStorage

from retina_plugin import FocalRetinaNet
from retina_plugin.benchmark import detectron2_retinanet_pair, tf32_disabled
from tests.utils import random_batch

DEVICE = os.environ.get("RETINA_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def models():
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"RETINA_TEST_DEVICE={DEVICE}: needs CUDA")
    with tf32_disabled():  # a no-op on the CPU
        reference, ours = detectron2_retinanet_pair(DEVICE)
        assert type(reference) is RetinaNet and type(ours) is FocalRetinaNet
        yield reference, ours


def test_state_dict_keys_identical(models):
    reference, ours = models
    assert list(reference.state_dict()) == list(ours.state_dict())


def _train_steps(model, batches):
    """Losses and gradients of a few SGD steps (the EMA loss normaliser carries over)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
    history = []
    with EventStorage():
        for batch in batches:
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            history.append(({k: v.item() for k, v in losses.items()}, grads))
            optimizer.step()
    return history


def test_training_losses_and_gradients_agree(models):
    reference, ours = models
    ours.load_state_dict(reference.state_dict())
    # Image 0 has 3 boxes, image 1 none; then a batch with several boxes in each image.
    batches = [
        random_batch((3, 0), seed=1),
        random_batch((4, 6), seed=2),
        random_batch((1, 2), seed=3),
    ]
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    reference_history = _train_steps(reference, batches)
    reference.load_state_dict(initial)
    ours_history = _train_steps(ours, batches)
    for (ref_losses, ref_grads), (our_losses, our_grads) in zip(reference_history, ours_history):
        assert our_losses.keys() == ref_losses.keys() == {"loss_cls", "loss_box_reg"}
        for name, value in ref_losses.items():
            assert our_losses[name] == pytest.approx(value, rel=1e-5)
        assert our_grads.keys() == ref_grads.keys()
        for name, grad in ref_grads.items():
            scale = grad.abs().max().item() + 1e-12
            torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-5 * scale)
    assert reference.loss_normalizer == ours.loss_normalizer


def test_inference_gives_same_detections(models):
    reference, ours = models
    ours.load_state_dict(reference.state_dict())
    batch = [
        {"image": x["image"], "height": 320, "width": 384} for x in random_batch((0, 0), seed=4)
    ]
    reference.eval(), ours.eval()
    # Random weights score everything near the prior 0.01: lower the threshold to get detections.
    for model in (reference, ours):
        model.test_score_thresh = 0.001
    with torch.no_grad():
        expected, actual = reference(batch), ours(batch)
    for ref_image, our_image in zip(expected, actual):
        ref_instances, our_instances = ref_image["instances"], our_image["instances"]
        assert len(ref_instances) == 100
        torch.testing.assert_close(our_instances.pred_boxes.tensor, ref_instances.pred_boxes.tensor)
        torch.testing.assert_close(our_instances.scores, ref_instances.scores)
        assert torch.equal(our_instances.pred_classes, ref_instances.pred_classes)
