"""CPU inference of the exported model: ONNX Runtime on the ONNX file against PyTorch eager
(Detectron2's RetinaNet and FocalRetinaNet, float32) on the same images, interleaved, after
checking that all three give the same detections."""

import os
import statistics
import tempfile

import numpy as np
import onnxruntime
import torch

from ..export import (
    Comparison,
    DeployableRetinaNet,
    compare_detections,
    example_inputs,
    export_to,
    quantize_onnx,
)
from .reference import detectron2_retinanet_pair
from .timing import time_interleaved

__all__ = ["bench_deploy"]

DETECTRON2 = "detectron2 RetinaNet, PyTorch float32"
OURS = "FocalRetinaNet, PyTorch float32"
ONNXRUNTIME = "exported ONNX, ONNX Runtime float32"
ONNXRUNTIME_INT8 = "exported ONNX, convolutions int8 (onnx-int8), ONNX Runtime"


def _session(path: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch uses
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _outputs(instances) -> tuple:
    return (instances.pred_boxes.tensor.numpy(), instances.scores.numpy(),
            instances.pred_classes.numpy())  # fmt: skip


def _check(reference, ours, session, images) -> Comparison:
    comparison = Comparison()
    for i, image in enumerate(images):
        with torch.no_grad():
            expected = _outputs(reference([{"image": image}])[0]["instances"])
            compare_detections(comparison, f"image {i}, FocalRetinaNet", expected,
                               _outputs(ours([{"image": image}])[0]["instances"]))  # fmt: skip
        size = np.array(image.shape[1:], dtype=np.int64)
        actual = session.run(None, {"image": image.numpy(), "output_size": size})
        compare_detections(comparison, f"image {i}, ONNX Runtime", expected, actual)
    return comparison


def bench_deploy(image_size: int, num_images: int, repeats: int):
    """Print the agreement and the table of median seconds per image (R50-FPN, 80 classes, CPU)."""
    print(f"\n## Inference on the CPU: R50-FPN, {image_size}x{image_size}, 80 classes, one image")
    reference, ours = detectron2_retinanet_pair("cpu")
    reference.eval(), ours.eval()
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, image_size, image_size), generator=generator).float()
              for _ in range(num_images)]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        # Every score kept (SCORE_THRESH_TEST 0): 100 detections per image to compare.
        thresh = reference.test_score_thresh
        reference.test_score_thresh = ours.test_score_thresh = 0.0
        module = DeployableRetinaNet(ours)
        path = export_to("onnx", module, example_inputs(module), folder)
        comparison = _check(reference, ours, _session(path), images)
        reference.test_score_thresh = ours.test_score_thresh = thresh
        print(f"Detections with SCORE_THRESH_TEST 0, against Detectron2's: {comparison.summary()}")
        assert comparison.equal, comparison.mismatches[:3]
        path = export_to("onnx", module, example_inputs(module), folder)  # SCORE_THRESH_TEST 0.05
        session = _session(path)
        # int8: calibrated on these images; its detections are not compared here (random
        # weights); its AP change is measured on a trained model (tools/export_model.py --eval).
        int8 = os.path.join(folder, "model.int8.onnx")
        calibration = [(x.numpy(), x.shape[1:]) for x in images]
        int8_session = _session(quantize_onnx(path, int8, calibration))
    sizes = [np.array(x.shape[1:], dtype=np.int64) for x in images]
    state = {"i": 0}

    def next_image():
        state["i"] = (state["i"] + 1) % num_images
        return state["i"]

    def run_torch(model):
        i = next_image()
        with torch.no_grad():
            model([{"image": images[i]}])

    def run_onnx(session):
        i = next_image()
        session.run(None, {"image": images[i].numpy(), "output_size": sizes[i]})

    steps = {DETECTRON2: lambda: run_torch(reference), OURS: lambda: run_torch(ours),
             ONNXRUNTIME: lambda: run_onnx(session),
             ONNXRUNTIME_INT8: lambda: run_onnx(int8_session)}  # fmt: skip
    for step in steps.values():
        step()  # warm-up
    times = time_interleaved(steps, repeats * num_images, "cpu")
    ref = statistics.median(times[DETECTRON2])
    print(f"Timed with SCORE_THRESH_TEST {reference.test_score_thresh}, {torch.get_num_threads()} "
          "threads (ONNX Runtime: as many), medians:")  # fmt: skip
    print("| model | s per image | x detectron2 |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / ref:.2f} |")
