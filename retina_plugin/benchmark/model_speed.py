"""The whole R50-FPN RetinaNet: Detectron2's own against FocalRetinaNet with the same weights, in
Detectron2's NCHW layout, in NHWC (channels-last, as configs/Base-FocalRetina.yaml builds it)
and in NHWC with mixed precision. Training steps and inference, after agreement checks."""

import copy
import json
import statistics

import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from .reference import detectron2_retinanet_pair
from .timing import tf32_disabled, time_interleaved

__all__ = [
    "model_batch",
    "training_step",
    "model_candidates",
    "check_model_agreement",
    "bench_model",
]

DETECTRON2 = "detectron2 RetinaNet"
NCHW = "FocalRetinaNet, NCHW (Detectron2's layout)"
NHWC = "FocalRetinaNet, NHWC (CHANNELS_LAST)"
NHWC_AMP = "FocalRetinaNet, NHWC + AMP"


def model_batch(batch_size: int, image_size: int, seed: int = 0) -> list:
    """`batch_size` random square images of `image_size` pixels, 8 random boxes of 80 classes each."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for image_id in range(batch_size):
        corner = torch.rand(8, 2, generator=generator) * image_size * 0.7
        extent = torch.rand(8, 2, generator=generator) * image_size * 0.3 + 16
        instances = Instances((image_size, image_size))
        instances.gt_boxes = Boxes(torch.cat([corner, corner + extent], dim=1))
        instances.gt_classes = torch.randint(0, 80, (8,), generator=generator)
        image = torch.randint(0, 256, (3, image_size, image_size), generator=generator).float()
        batch.append({"image": image, "instances": instances, "image_id": image_id})
    return batch


def training_step(model, batch) -> dict:
    """Forward + backward of one batch (no optimizer step): {loss name: value}."""
    model.zero_grad(set_to_none=True)
    model.loss_normalizer = 100.0  # the same EMA state every step, so losses repeat exactly
    losses = model(batch)
    sum(losses.values()).backward()
    return {k: v.item() for k, v in losses.items()}


def model_candidates(device: str) -> dict:
    """{name: model}: Detectron2's RetinaNet and FocalRetinaNet with its weights in three forms."""
    reference, ours = detectron2_retinanet_pair(device)
    # FocalRetinaNet as configs/Base-FocalRetina.yaml builds it: NHWC convolutions.
    ours_nhwc = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    ours_amp = copy.deepcopy(ours_nhwc)
    ours_amp.amp_dtype = "auto"
    return {DETECTRON2: reference, NCHW: ours, NHWC: ours_nhwc, NHWC_AMP: ours_amp}


def check_model_agreement(models: dict, batch: list) -> dict:
    """Assert that the full-precision models give Detectron2's losses (1e-5 relative) and
    detections (NCHW: bitwise; NHWC: boxes within 0.01 px), with TF32 off so that only the layout
    differs. Returns {name: losses} of every model."""
    images = [{"image": x["image"]} for x in batch]
    with tf32_disabled():
        with EventStorage():
            for model in models.values():
                model.train()
            losses = {name: training_step(model, batch) for name, model in models.items()}
        with torch.no_grad():
            for model in models.values():
                model.eval()
            outputs = {name: models[name](images) for name in (DETECTRON2, NCHW, NHWC)}
    for key, value in losses[DETECTRON2].items():
        for name in (NCHW, NHWC):
            assert abs(losses[name][key] - value) <= 1e-5 * abs(value), (name, key, losses)
    for expected, nchw, nhwc in zip(outputs[DETECTRON2], outputs[NCHW], outputs[NHWC]):
        expected_boxes = expected["instances"].pred_boxes.tensor
        assert torch.equal(expected_boxes, nchw["instances"].pred_boxes.tensor)
        torch.testing.assert_close(
            nhwc["instances"].pred_boxes.tensor, expected_boxes, rtol=0, atol=0.01
        )
    return losses


def time_models(models: dict, batch: list, repeats: int, device: str) -> tuple:
    """({name: training-step seconds}, {name: inference seconds}), interleaved, after a warm-up."""
    images = [{"image": x["image"]} for x in batch]
    with EventStorage():
        for model in models.values():
            model.train()
            training_step(model, batch)  # warm-up: compilation, allocator
        steps = {name: (lambda m=model: training_step(m, batch)) for name, model in models.items()}
        train_times = time_interleaved(steps, repeats, device)
    with torch.no_grad():
        for model in models.values():
            model.eval()
            model(images)  # warm-up
        steps = {name: (lambda m=model: m(images)) for name, model in models.items()}
        infer_times = time_interleaved(steps, repeats, device)
    return train_times, infer_times


def bench_model(device: str, batch_size: int, image_size: int, repeats: int):
    """Print the agreement and the table of median training-step and inference times."""
    print(f"\n## R50-FPN RetinaNet, {batch_size} x {image_size}x{image_size}, 80 classes, {device}")
    models = model_candidates(device)
    batch = model_batch(batch_size, image_size)
    losses = check_model_agreement(models, batch)
    print("Losses:", json.dumps(losses))
    train_times, infer_times = time_models(models, batch, repeats, device)
    print(
        "Same losses (1e-5 relative); same detections (NCHW: bitwise, NHWC: boxes within 0.01 px)"
    )
    if device.startswith("cuda"):
        print(
            "The agreement was checked with TF32 off (torch.backends.cuda.matmul.allow_tf32 and "
            "torch.backends.cudnn.allow_tf32 False); the timings use PyTorch's defaults."
        )
    train_ref = statistics.median(train_times[DETECTRON2])
    infer_ref = statistics.median(infer_times[DETECTRON2])
    print("| model | train step s | x detectron2 | inference s | x detectron2 |")
    print("| --- | --- | --- | --- | --- |")
    for name in models:
        train, infer = statistics.median(train_times[name]), statistics.median(infer_times[name])
        print(
            f"| {name} | {train:.3f} | {train / train_ref:.2f} | {infer:.3f} | {infer / infer_ref:.2f} |"
        )
