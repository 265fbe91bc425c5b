#!/usr/bin/env python
"""
Side-by-side speed (and memory) of retina-plugin against Detectron2 / fvcore, in one process.

    python tools/benchmark.py                     # everything, on the CPU
    python tools/benchmark.py --section loss      # focal loss only (seconds)
    python tools/benchmark.py --device cuda       # on a GPU

Every comparison runs its candidates interleaved (A, B, A, B, ...) on the same inputs and prints
medians and ratios, since absolute times on shared machines drift. Each comparison also checks
that the candidates agree (losses, gradients, detections) before timing them.
"""

import argparse
import copy
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from fvcore.nn import sigmoid_focal_loss_jit
from torch.nn import functional as F

import retina_plugin
from retina_plugin import sigmoid_focal_loss
from retina_plugin.losses.functional import sigmoid_focal_loss_from_labels
from retina_plugin.reference import detectron2_retinanet_pair

ALPHA, GAMMA = 0.25, 2.0
_COMPILE_CACHE_DIR = os.path.join(tempfile.gettempdir(), "retina_plugin_benchmark_inductor_cache")


# ------------------------------------------------------------------------------------------------
# Focal loss
# ------------------------------------------------------------------------------------------------


def loss_inputs(num_anchors, num_classes, device, seed=0):
    """Logits and labels as in a COCO step: ~1% foreground, ~2% ignored, the rest background."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=generator) * 2 - 4
    labels = torch.full((num_anchors,), num_classes, dtype=torch.int64)
    draw = torch.rand(num_anchors, generator=generator)
    labels[draw < 0.02] = -1
    positives = draw > 0.99
    labels[positives] = torch.randint(0, num_classes, (int(positives.sum()),), generator=generator)
    return logits.to(device), labels.to(device)


def detectron2_loss_step(logits, labels):
    """Detectron2's RetinaNet.losses: gather valid anchors, one-hot targets, fvcore's jit loss."""
    num_classes = logits.shape[1]
    valid = labels >= 0
    targets = F.one_hot(labels[valid], num_classes=num_classes + 1)[:, :-1].to(logits.dtype)
    loss = sigmoid_focal_loss_jit(logits[valid], targets, ALPHA, GAMMA, reduction="sum")
    loss.backward()
    return loss


def plugin_loss_step(logits, labels, compiled=True):
    loss = sigmoid_focal_loss_from_labels(logits, labels, ALPHA, GAMMA, compiled=compiled)
    loss.backward()
    return loss


def dense_targets(labels, num_classes):
    return F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :-1].float()


def fvcore_dense_step(logits, targets):
    loss = sigmoid_focal_loss_jit(logits, targets, ALPHA, GAMMA, reduction="sum")
    loss.backward()
    return loss


def plugin_dense_step(logits, targets):
    loss = sigmoid_focal_loss(logits, targets, ALPHA, GAMMA, reduction="sum")
    loss.backward()
    return loss


LOSS_CANDIDATES = {
    "detectron2 (fvcore jit, one-hot)": lambda x, labels, targets: detectron2_loss_step(x, labels),
    "retina_plugin from labels, compiled": lambda x, labels, targets: plugin_loss_step(x, labels),
    "retina_plugin from labels, eager": lambda x, labels, targets: plugin_loss_step(
        x, labels, compiled=False
    ),
    "fvcore jit, dense targets": lambda x, labels, targets: fvcore_dense_step(x, targets),
    "retina_plugin public, dense targets": lambda x, labels, targets: plugin_dense_step(x, targets),
}


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(candidates: dict, repeats: int, device: str) -> dict:
    """{name: [seconds, ...]}, running the candidates in turn `repeats` times."""
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, step in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def check_loss_agreement(logits, labels, targets):
    """Losses and gradients agree to 1e-5 relative: the label paths with Detectron2's, the dense
    paths (whose targets include the ignored anchors) with each other."""
    results = {}
    for name, step in LOSS_CANDIDATES.items():
        x = logits.clone().requires_grad_()
        results[name] = (step(x, labels, targets).detach(), x.grad)
    ref_loss, ref_grad = results["detectron2 (fvcore jit, one-hot)"]
    for name in ("retina_plugin from labels, compiled", "retina_plugin from labels, eager"):
        loss, grad = results[name]
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(
            grad, ref_grad, rtol=1e-5, atol=1e-6 * ref_grad.abs().max().item()
        )
    ref_loss, ref_grad = results["fvcore jit, dense targets"]
    loss, grad = results["retina_plugin public, dense targets"]
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6 * ref_grad.abs().max().item())


def peak_memory_of(candidate: str, args) -> float:
    """Extra peak memory (MiB) of one fwd+bwd of a candidate, measured in a fresh process."""
    command = [
        sys.executable, __file__, "--memory-probe", candidate, "--device", args.device,
        "--anchors", str(args.anchors), "--classes", str(args.classes),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def compile_cost_of(args, cache: str) -> float:
    """First call minus steady call of the compiled fused loss, in a fresh process. "cold": an
    empty Inductor cache folder; "warm": the same folder again (Inductor's on-disk cache)."""
    environment = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=_COMPILE_CACHE_DIR)
    if cache == "cold":
        shutil.rmtree(_COMPILE_CACHE_DIR, ignore_errors=True)
    command = [
        sys.executable, __file__, "--compile-probe", "--device", args.device,
        "--anchors", str(args.anchors), "--classes", str(args.classes),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(out.stdout.strip().splitlines()[-1])["compile_s"]


def compile_probe(args):
    logits, labels = loss_inputs(args.anchors, args.classes, args.device)
    durations = []
    for _ in range(3):
        x = logits.clone().requires_grad_()
        synchronize(args.device)
        start = time.perf_counter()
        plugin_loss_step(x, labels)
        synchronize(args.device)
        durations.append(time.perf_counter() - start)
    print(json.dumps({"compile_s": durations[0] - min(durations[1:])}))


def memory_probe(args):
    logits, labels = loss_inputs(args.anchors, args.classes, args.device)
    targets = dense_targets(labels, args.classes)
    step = LOSS_CANDIDATES[args.memory_probe]
    x = logits.clone().requires_grad_()
    step(x, labels, targets)  # warm-up: compilation, jit profiling, allocator
    x.grad = None
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(x, labels, targets)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = cpu_peak_rss(lambda: step(x, labels, targets))
    print(json.dumps({"peak_mib": peak / 2**20}))


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def cpu_peak_rss(fn) -> int:
    """Peak resident memory (bytes) that `fn` adds: Linux's VmHWM, reset just before `fn`."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the baseline is low
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) * 1024


def bench_loss(args):
    print(
        f"\n## Focal loss forward + backward, ({args.anchors}, {args.classes}) float32, {args.device}"
    )
    logits, labels = loss_inputs(args.anchors, args.classes, args.device)
    targets = dense_targets(labels, args.classes)
    check_loss_agreement(logits, labels, targets)

    compile_cost = {cache: compile_cost_of(args, cache) for cache in ("cold", "warm")}

    inputs = {name: logits.clone().requires_grad_() for name in LOSS_CANDIDATES}
    steps = {
        name: (lambda name=name, step=step: step(inputs[name], labels, targets))
        for name, step in LOSS_CANDIDATES.items()
    }
    times = time_interleaved(steps, args.loss_repeats, args.device)
    reference = statistics.median(times["detectron2 (fvcore jit, one-hot)"])
    dense_reference = statistics.median(times["fvcore jit, dense targets"])
    print("| path | median ms | speed-up | extra peak memory MiB |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        baseline = dense_reference if "dense" in name else reference
        memory = peak_memory_of(name, args)
        print(f"| {name} | {median * 1e3:.1f} | {baseline / median:.2f}x | {memory:.0f} |")
    print(
        "\nOne-time compile cost of the fused loss (first call minus a later one, fresh process): "
        f"{compile_cost['cold']:.1f} s with an empty Inductor cache, "
        f"{compile_cost['warm']:.1f} s with Inductor's on-disk cache of the previous run"
    )


# ------------------------------------------------------------------------------------------------
# Whole model
# ------------------------------------------------------------------------------------------------


def model_batch(args, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = args.image_size
    batch = []
    for image_id in range(args.batch):
        corner = torch.rand(8, 2, generator=generator) * size * 0.7
        extent = torch.rand(8, 2, generator=generator) * size * 0.3 + 16
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.cat([corner, corner + extent], dim=1))
        instances.gt_classes = torch.randint(0, 80, (8,), generator=generator)
        image = torch.randint(0, 256, (3, size, size), generator=generator).float()
        batch.append({"image": image, "instances": instances, "image_id": image_id})
    return batch


def training_step(model, batch):
    model.zero_grad(set_to_none=True)
    model.loss_normalizer = 100.0  # the same EMA state every step, so losses repeat exactly
    losses = model(batch)
    sum(losses.values()).backward()
    return {k: v.item() for k, v in losses.items()}


def bench_model(args):
    print(
        f"\n## R50-FPN RetinaNet, {args.batch} x {args.image_size}x{args.image_size}, 80 classes, {args.device}"
    )
    reference, ours = detectron2_retinanet_pair(args.device)
    # FocalRetinaNet as configs/Base-FocalRetina.yaml builds it: NHWC convolutions.
    ours_nhwc = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    ours_amp = copy.deepcopy(ours_nhwc)
    ours_amp.amp_dtype = "auto"
    batch = model_batch(args)
    models = {
        "detectron2 RetinaNet": reference,
        "FocalRetinaNet, NCHW (Detectron2's layout)": ours,
        "FocalRetinaNet, NHWC (CHANNELS_LAST)": ours_nhwc,
        "FocalRetinaNet, NHWC + AMP": ours_amp,
    }

    with EventStorage():
        for model in models.values():
            model.train()
        losses = {name: training_step(model, batch) for name, model in models.items()}
        for key, value in losses["detectron2 RetinaNet"].items():
            for name in (
                "FocalRetinaNet, NCHW (Detectron2's layout)",
                "FocalRetinaNet, NHWC (CHANNELS_LAST)",
            ):
                assert abs(losses[name][key] - value) <= 1e-5 * abs(value), (name, key, losses)
        for model in models.values():  # warm-up: compilation, allocator
            training_step(model, batch)
        steps = {
            name: (lambda model=model: training_step(model, batch))
            for name, model in models.items()
        }
        train_times = time_interleaved(steps, args.model_repeats, args.device)
    print("Losses:", json.dumps(losses))

    images = [{"image": x["image"]} for x in batch]
    with torch.no_grad():
        for model in models.values():
            model.eval()
        outputs = {name: model(images) for name, model in models.items()}
        reference_outputs = outputs["detectron2 RetinaNet"]
        for expected, actual in zip(
            reference_outputs, outputs["FocalRetinaNet, NCHW (Detectron2's layout)"]
        ):
            assert torch.equal(
                expected["instances"].pred_boxes.tensor, actual["instances"].pred_boxes.tensor
            )
        for expected, actual in zip(
            reference_outputs, outputs["FocalRetinaNet, NHWC (CHANNELS_LAST)"]
        ):
            torch.testing.assert_close(
                actual["instances"].pred_boxes.tensor,
                expected["instances"].pred_boxes.tensor,
                rtol=0,
                atol=0.01,
            )
        steps = {name: (lambda model=model: model(images)) for name, model in models.items()}
        infer_times = time_interleaved(steps, args.model_repeats, args.device)

    train_ref = statistics.median(train_times["detectron2 RetinaNet"])
    infer_ref = statistics.median(infer_times["detectron2 RetinaNet"])
    print(
        "Same losses (1e-5 relative); same detections (NCHW: bitwise, NHWC: boxes within 0.01 px)"
    )
    print("| model | train step s | x detectron2 | inference s | x detectron2 |")
    print("| --- | --- | --- | --- | --- |")
    for name in models:
        train, infer = statistics.median(train_times[name]), statistics.median(infer_times[name])
        print(
            f"| {name} | {train:.3f} | {train / train_ref:.2f} | {infer:.3f} | {infer / infer_ref:.2f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--section", choices=("all", "loss", "model"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--anchors", type=int, default=240000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--loss-repeats", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--model-repeats", type=int, default=5)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args)
    if args.compile_probe:
        return compile_probe(args)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, retina_plugin at {retina_plugin.__file__}"
    )
    print(time.strftime("%Y-%m-%d %H:%M"))
    if args.section in ("all", "loss"):
        bench_loss(args)
    if args.section in ("all", "model"):
        bench_model(args)


if __name__ == "__main__":
    main()
