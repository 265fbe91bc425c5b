"""The sigmoid focal loss, forward + backward: Detectron2's path (fvcore's jit loss on one-hot
targets of the valid anchors) against ours from labels, and fvcore's dense loss against our public
one. Shape shorthand: M anchors, K classes."""

import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch.nn import functional as F

from ..losses.functional import sigmoid_focal_loss, sigmoid_focal_loss_from_labels
from .timing import first_call_overhead, peak_memory_bytes, run_in_fresh_process, time_interleaved

__all__ = [
    "LossProblem",
    "LOSS_CANDIDATES",
    "loss_inputs",
    "dense_targets",
    "check_loss_agreement",
    "measure_peak_memory",
    "measure_compile_cost",
    "bench_loss",
]

ALPHA, GAMMA = 0.25, 2.0
DETECTRON2 = "detectron2 (fvcore jit, one-hot)"
FVCORE_DENSE = "fvcore jit, dense targets"
_COMPILE_CACHE_DIR = os.path.join(tempfile.gettempdir(), "retina_plugin_benchmark_inductor_cache")
_PROBE_MODULE = "retina_plugin.benchmark.probe"  # its command line: the measurements below


@dataclass(frozen=True)
class LossProblem:
    """The (M, K) float32 logits of one step on `device`."""

    anchors: int
    classes: int
    device: str

    def probe_argv(self) -> list:
        return [
            "--device",
            self.device,
            "--anchors",
            str(self.anchors),
            "--classes",
            str(self.classes),
        ]


def loss_inputs(problem: LossProblem, seed: int = 0):
    """Logits (M, K) and labels (M,) as in a COCO step: ~1% foreground, ~2% ignored (-1), the
    rest background (K)."""
    anchors, classes = problem.anchors, problem.classes
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(anchors, classes, generator=generator) * 2 - 4
    labels = torch.full((anchors,), classes, dtype=torch.int64)
    draw = torch.rand(anchors, generator=generator)
    labels[draw < 0.02] = -1
    positives = draw > 0.99
    labels[positives] = torch.randint(0, classes, (int(positives.sum()),), generator=generator)
    return logits.to(problem.device), labels.to(problem.device)


def dense_targets(labels, num_classes):
    """(M, K) one-hot targets of every anchor: background rows are zero, ignored anchors (-1)
    count as class 0 (the dense losses take every anchor, as no valid-anchor gather is done)."""
    return F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :-1].float()


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


def fvcore_dense_step(logits, targets):
    loss = sigmoid_focal_loss_jit(logits, targets, ALPHA, GAMMA, reduction="sum")
    loss.backward()
    return loss


def plugin_dense_step(logits, targets):
    loss = sigmoid_focal_loss(logits, targets, ALPHA, GAMMA, reduction="sum")
    loss.backward()
    return loss


# {name: step(logits, labels, dense targets) -> loss}; "dense" in a name marks the dense paths.
LOSS_CANDIDATES = {
    DETECTRON2: lambda x, labels, targets: detectron2_loss_step(x, labels),
    "retina_plugin from labels, compiled": lambda x, labels, targets: plugin_loss_step(x, labels),
    "retina_plugin from labels, eager": lambda x, labels, targets: plugin_loss_step(
        x, labels, compiled=False
    ),
    FVCORE_DENSE: lambda x, labels, targets: fvcore_dense_step(x, targets),
    "retina_plugin public, dense targets": lambda x, labels, targets: plugin_dense_step(x, targets),
}


def _assert_same_loss_and_grad(actual, expected):
    (loss, grad), (ref_loss, ref_grad) = actual, expected
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6 * ref_grad.abs().max().item())


def check_loss_agreement(logits, labels, targets):
    """Losses and gradients agree to 1e-5 relative: the label paths with Detectron2's, the dense
    paths (whose targets include the ignored anchors) with each other."""
    results = {}
    for name, step in LOSS_CANDIDATES.items():
        x = logits.clone().requires_grad_()
        results[name] = (step(x, labels, targets).detach(), x.grad)
    for name in ("retina_plugin from labels, compiled", "retina_plugin from labels, eager"):
        _assert_same_loss_and_grad(results[name], results[DETECTRON2])
    _assert_same_loss_and_grad(
        results["retina_plugin public, dense targets"], results[FVCORE_DENSE]
    )


def measure_peak_memory(candidate: str, problem: LossProblem) -> float:
    """Extra peak memory (MiB) of one fwd+bwd of `candidate`, after a warm-up, in this process."""
    logits, labels = loss_inputs(problem)
    targets = dense_targets(labels, problem.classes)
    step = LOSS_CANDIDATES[candidate]
    x = logits.clone().requires_grad_()
    step(x, labels, targets)  # warm-up: compilation, jit profiling, allocator
    x.grad = None
    return peak_memory_bytes(lambda: step(x, labels, targets), problem.device) / 2**20


def measure_compile_cost(problem: LossProblem) -> float:
    """First call minus the fastest of two later calls of the compiled loss, in this process."""
    logits, labels = loss_inputs(problem)
    inputs = [logits.clone().requires_grad_() for _ in range(3)]
    return first_call_overhead(
        [lambda x=x: plugin_loss_step(x, labels) for x in inputs], problem.device
    )


def peak_memory_of(candidate: str, problem: LossProblem) -> float:
    """:func:`measure_peak_memory` in a fresh process."""
    argv = ["memory", "--candidate", candidate, *problem.probe_argv()]
    return run_in_fresh_process(_PROBE_MODULE, argv)["peak_mib"]


def compile_cost_of(problem: LossProblem, cache: str) -> float:
    """:func:`measure_compile_cost` in a fresh process. "cold": an empty Inductor cache folder;
    "warm": the same folder again (Inductor's on-disk cache)."""
    environment = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=_COMPILE_CACHE_DIR)
    if cache == "cold":
        shutil.rmtree(_COMPILE_CACHE_DIR, ignore_errors=True)
    argv = ["compile", *problem.probe_argv()]
    return run_in_fresh_process(_PROBE_MODULE, argv, env=environment)["compile_s"]


def bench_loss(problem: LossProblem, repeats: int, probes: bool = True):
    """Print the agreement, the table of medians and speed-ups (against Detectron2's path, or
    fvcore's for the dense paths) and, with `probes`, peak memory and compile cost measured in
    fresh processes."""
    print(
        f"\n## Focal loss forward + backward, ({problem.anchors}, {problem.classes}) float32, "
        f"{problem.device}"
    )
    logits, labels = loss_inputs(problem)
    targets = dense_targets(labels, problem.classes)
    check_loss_agreement(logits, labels, targets)
    print(
        "Same losses and gradients (1e-5 relative): the label paths as Detectron2's, "
        "the dense paths as fvcore's"
    )
    if probes:
        compile_cost = {cache: compile_cost_of(problem, cache) for cache in ("cold", "warm")}

    inputs = {name: logits.clone().requires_grad_() for name in LOSS_CANDIDATES}
    steps = {
        name: (lambda name=name, step=step: step(inputs[name], labels, targets))
        for name, step in LOSS_CANDIDATES.items()
    }
    times = time_interleaved(steps, repeats, problem.device)
    reference = statistics.median(times[DETECTRON2])
    dense_reference = statistics.median(times[FVCORE_DENSE])
    print("| path | median ms | speed-up | extra peak memory MiB |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        baseline = dense_reference if "dense" in name else reference
        memory = f"{peak_memory_of(name, problem):.0f}" if probes else "-"
        print(f"| {name} | {median * 1e3:.1f} | {baseline / median:.2f}x | {memory} |")
    if probes:
        print(
            "\nOne-time compile cost of the fused loss (first call minus a later one, fresh "
            f"process): {compile_cost['cold']:.1f} s with an empty Inductor cache, "
            f"{compile_cost['warm']:.1f} s with Inductor's on-disk cache of the previous run"
        )
