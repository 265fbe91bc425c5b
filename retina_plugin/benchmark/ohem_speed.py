"""
OHEM's classification loss on the anchors of one large image with one box: the time and peak
memory of a forward + backward of :class:`retina_plugin.OHEMCrossEntropyLoss` (its anchor
selection, with the NMS, included), in one of two states of the model:

- ``fresh``: logits at the prior (-log((1 - pi) / pi)) plus noise; the box's positives have the
  highest losses, at the top of the ranking;
- ``learned``: the positives confidently right, with the lowest losses of all: to know which
  positives NMS keeps, the selection must look at anchors far down the ranking (its worst case
  when an image has fewer than f B positives).

    python -m retina_plugin.benchmark.ohem_speed --image-size 800 --states fresh learned

prints one JSON line per state (``python tools/benchmark.py --section ohem``: a table). The anchors and labels are those of R50-FPN RetinaNet
(Detectron2's ``retinanet_R_50_FPN_1x.yaml``: P3-P7, 9 anchors per location, its Matcher); the
backbone and heads, which OHEM does not change, are not run.
"""

import argparse
import json
import math
import statistics
from typing import NamedTuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.structures import Boxes, pairwise_iou
from torch import Tensor

from ..losses import OHEMCrossEntropyLoss
from ..modeling.meta_arch import build_anchor_matcher
from .reference import detectron2_retinanet_config
from .timing import peak_memory_bytes, time_interleaved

__all__ = ["OHEMProblem", "ohem_problem", "measure_ohem_step", "bench_ohem"]

_STRIDES = (8, 16, 32, 64, 128)
_NUM_CLASSES = 80


class OHEMProblem(NamedTuple):
    logits: Tensor  # (1, R, K)
    labels: Tensor  # (1, R): class, K background, -1 ignored
    anchors: Tensor  # (R, 4)


def _anchors_and_labels(image_size: int, box: list, box_class: int):
    cfg = detectron2_retinanet_config()
    shapes = [ShapeSpec(stride=s) for s in _STRIDES]
    generator = build_anchor_generator(cfg, shapes)
    features = [
        torch.zeros(1, 1, math.ceil(image_size / s), math.ceil(image_size / s)) for s in _STRIDES
    ]
    anchors = Boxes.cat(generator(features))
    matched, match_labels = build_anchor_matcher(cfg)(
        pairwise_iou(Boxes(torch.tensor([box])), anchors)
    )
    labels = torch.where(match_labels == 1, box_class, _NUM_CLASSES)
    labels[match_labels == -1] = -1
    return anchors.tensor, labels


def ohem_problem(image_size: int, state: str, device: str = "cpu", seed: int = 0) -> OHEMProblem:
    """The anchors of a square image with one box of class 3 (120 x 100 px at 800 px, scaled
    with the image), and logits in `state` ("fresh" or "learned", see the module docstring)."""
    box = [image_size * f for f in (0.375, 0.375, 0.525, 0.5)]
    anchors, labels = _anchors_and_labels(image_size, box, 3)
    generator = torch.Generator().manual_seed(seed)
    prior_logit = -math.log((1 - 0.01) / 0.01)
    logits = prior_logit + torch.randn(len(anchors), _NUM_CLASSES, generator=generator)
    if state == "learned":
        positive = labels == 3
        logits[positive] = -8.0
        logits[positive, 3] = 8.0
    return OHEMProblem(logits[None].to(device), labels[None].to(device), anchors.to(device))


def _step(loss: OHEMCrossEntropyLoss, problem: OHEMProblem):
    logits = problem.logits.clone().requires_grad_()
    loss(logits, problem.labels, problem.anchors).backward()


def measure_ohem_step(image_size: int, state: str, repeats: int, device: str = "cpu") -> dict:
    """{"state", "anchors", "positives", "seconds" (median of `repeats`), "peak_mib" (the
    first step's extra memory: resident on the CPU, allocated on CUDA)} of one OHEM loss step
    at the config's defaults (B = 128, f = 0.25, NMS 0.7), eager."""
    problem = ohem_problem(image_size, state, device)
    loss = OHEMCrossEntropyLoss(compiled=False)
    peak = peak_memory_bytes(lambda: _step(loss, problem), device)
    times = time_interleaved({state: lambda: _step(loss, problem)}, repeats, device)[state]
    return {
        "state": state,
        "image_size": image_size,
        "anchors": problem.anchors.shape[0],
        "positives": int((problem.labels == 3).sum()),
        "seconds": statistics.median(times),
        "peak_mib": peak / 2**20,
    }


def bench_ohem(image_size: int, repeats: int, device: str = "cpu"):
    """Print the table of :func:`measure_ohem_step` in both states."""
    print(f"\n## OHEM loss step, one {image_size} x {image_size} image with one box, {device}")
    print("| state | anchors | positives | step s | peak MiB |")
    print("| --- | --- | --- | --- | --- |")
    for state in ("fresh", "learned"):
        m = measure_ohem_step(image_size, state, repeats, device)
        print(
            f"| {state} | {m['anchors']} | {m['positives']} | {m['seconds']:.3f} "
            f"| {m['peak_mib']:.0f} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=800)
    parser.add_argument(
        "--states", nargs="+", choices=("fresh", "learned"), default=["fresh", "learned"]
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for state in args.states:
        measured = measure_ohem_step(args.image_size, state, args.repeats, args.device)
        print(json.dumps(measured), flush=True)


if __name__ == "__main__":
    main()
