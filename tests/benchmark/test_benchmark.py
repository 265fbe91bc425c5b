"""retina_plugin.benchmark's timing and loss comparisons, and tools/benchmark.py as users run it
(on tiny sizes: it checks the tables and the agreement, not the speeds)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from retina_plugin.benchmark import loss_speed, timing
from tests.utils import REPO_ROOT


def _fake_clock(monkeypatch, readings):
    """time.perf_counter returns `readings` in turn, so each timed call lasts a chosen time."""
    readings = iter(readings)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(readings))


def test_time_interleaved_runs_candidates_in_turn(monkeypatch):
    calls = []
    candidates = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    # (start, end) per call, in the order a, b, a, b, a, b: a lasts 3, 1, 2 and b 10, 30, 20.
    _fake_clock(monkeypatch, [0, 3, 3, 13, 13, 14, 14, 44, 44, 46, 46, 66])
    times = timing.time_interleaved(candidates, repeats=3, device="cpu")
    assert calls == ["a", "b"] * 3
    assert times == {"a": [3, 1, 2], "b": [10, 30, 20]}


def test_first_call_overhead_is_first_minus_fastest_later(monkeypatch):
    _fake_clock(monkeypatch, [0, 5, 5, 7, 7, 8])  # calls of 5, 2 and 1 s
    assert timing.first_call_overhead([lambda: None] * 3, device="cpu") == 4


def test_matmul_gflop_per_s_by_hand():
    # 1000^2 outputs, 1000 multiply-adds each: 2e9 operations in 2 s.
    assert timing.matmul_gflop_per_s(1000, 2.0) == pytest.approx(1.0)
    assert timing.matmul_gflop_per_s(2048, 0.1) == pytest.approx(2 * 2048**3 / 1e8)


def test_matmul_speed_takes_the_median_of_five(monkeypatch):
    # The warm-up product is not timed; the five timed ones last 0.4, 0.1, 0.3, 0.5 and 0.2 s.
    _fake_clock(monkeypatch, [0, 0.4, 1, 1.1, 2, 2.3, 3, 3.5, 4, 4.2])
    speed = timing.matmul_speed("cpu", size=64)
    assert speed == pytest.approx(2 * 64**3 / 0.3 / 1e9)


def test_cpu_peak_rss_of_a_64_mib_tensor():
    peak = timing.cpu_peak_rss(lambda: torch.ones(16 * 2**20))  # 64 MiB of float32, all touched
    # Other pages of the process may be released while it runs (in the full suite it measured
    # 63.8 MiB once), and the allocator may add some.
    assert 60 * 2**20 <= peak < 72 * 2**20


def test_tf32_disabled_inside_and_restored_after():
    # torch 2.14: the fp32_precision settings (TF32 for cuDNN convolutions by default).
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        matmul.fp32_precision = conv.fp32_precision = "tf32"
        with pytest.raises(RuntimeError, match="inside"), timing.tf32_disabled():
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
            raise RuntimeError("inside")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        # The legacy flag set by a user before: restored as it was, and readable after.
        matmul.fp32_precision = "none"
        torch.backends.cudnn.allow_tf32 = True
        with timing.tf32_disabled():
            assert conv.fp32_precision == "ieee"
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def test_loss_inputs_are_a_coco_like_mix():
    problem = loss_speed.LossProblem(anchors=100000, classes=80, device="cpu")
    logits, labels = loss_speed.loss_inputs(problem)
    assert logits.shape == (100000, 80) and labels.shape == (100000,)
    positives = (labels >= 0) & (labels < 80)
    assert (labels == -1).float().mean().item() == pytest.approx(0.02, abs=0.002)
    assert positives.float().mean().item() == pytest.approx(0.01, abs=0.002)
    assert torch.equal(loss_speed.loss_inputs(problem)[1], labels)  # seeded
    targets = loss_speed.dense_targets(labels, 80)
    # One-hot rows for the positives and, as class 0, the ignored anchors; background rows zero.
    assert torch.equal(targets.sum(dim=1), (labels < 80).float())
    assert torch.equal(targets[labels == -1, 0], torch.ones(int((labels == -1).sum())))


def test_loss_agreement_fails_on_a_wrong_candidate(monkeypatch):
    problem = loss_speed.LossProblem(anchors=500, classes=4, device="cpu")
    logits, labels = loss_speed.loss_inputs(problem)
    targets = loss_speed.dense_targets(labels, problem.classes)
    loss_speed.check_loss_agreement(logits, labels, targets)
    wrong = dict(loss_speed.LOSS_CANDIDATES)
    wrong["retina_plugin from labels, eager"] = lambda x, labels, targets: (
        loss_speed.plugin_loss_step(x * 1.01, labels, compiled=False)
    )
    monkeypatch.setattr(loss_speed, "LOSS_CANDIDATES", wrong)
    with pytest.raises(AssertionError, match="Scalars are not close"):
        loss_speed.check_loss_agreement(logits, labels, targets)


def test_peak_memory_probe_in_a_fresh_process():
    """python -m retina_plugin.benchmark.probe: fvcore's dense path holds at least the (M, K)
    gradient of its logits at its peak."""
    problem = loss_speed.LossProblem(anchors=200000, classes=8, device="cpu")
    peak_mib = loss_speed.peak_memory_of(loss_speed.FVCORE_DENSE, problem)
    assert peak_mib >= 200000 * 8 * 4 / 2**20


def test_benchmark_tool_on_tiny_sizes():
    command = [
        # The deploy section exports R50-FPN twice (minutes): run by hand (docs/DEPLOY.md).
        sys.executable, "tools/benchmark.py", "--section", "loss", "model", "--matmul-size", "256",
        "--anchors", "2000", "--classes", "8", "--loss-repeats", "3", "--no-probes",
        "--image-size", "32", "--batch", "1", "--model-repeats", "1",
    ]  # fmt: skip
    # Compilation would take most of the time here; the eager paths check the same things.
    environment = dict(os.environ, RETINA_PLUGIN_COMPILE="0")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"torch {torch.__version__}, ")
    speed = re.fullmatch(
        r"Machine speed: ([0-9.]+) GFLOP/s, float32 matmul 256x256 on cpu \(median of 5\)", lines[2]
    )
    assert speed and float(speed.group(1)) > 0

    loss_at = lines.index("## Focal loss forward + backward, (2000, 8) float32, cpu")
    assert lines[loss_at + 1] == (
        "Same losses and gradients (1e-5 relative): the label paths as Detectron2's, "
        "the dense paths as fvcore's"
    )
    assert lines[loss_at + 2] == "| path | median ms | speed-up | extra peak memory MiB |"
    rows = [line.split(" | ") for line in lines[loss_at + 4 : loss_at + 9]]
    assert [row[0].lstrip("| ") for row in rows] == list(loss_speed.LOSS_CANDIDATES)
    assert rows[0][2] == rows[3][2] == "1.00x"  # the baselines: Detectron2's, fvcore's dense
    assert all(row[2].endswith("x") and float(row[2][:-1]) > 0 for row in rows)
    assert all(row[3] == "- |" for row in rows)  # no probes
    assert "compile cost" not in result.stdout

    model_at = lines.index("## R50-FPN RetinaNet, 1 x 32x32, 80 classes, cpu")
    losses = json.loads(lines[model_at + 1].removeprefix("Losses: "))
    detectron2 = losses["detectron2 RetinaNet"]
    for name in (
        "FocalRetinaNet, NCHW (Detectron2's layout)",
        "FocalRetinaNet, NHWC (CHANNELS_LAST)",
    ):
        assert losses[name] == pytest.approx(detectron2, rel=1e-5)
    assert losses["FocalRetinaNet, NHWC + AMP"] == pytest.approx(detectron2, rel=0.01)
    assert lines[model_at + 2] == (
        "Same losses (1e-5 relative); same detections (NCHW: bitwise, NHWC: boxes within 0.01 px)"
    )
    assert (
        lines[model_at + 3]
        == "| model | train step s | x detectron2 | inference s | x detectron2 |"
    )
    rows = [line.split(" | ") for line in lines[model_at + 5 :]]
    assert [row[0].lstrip("| ") for row in rows] == list(losses)
    assert rows[0][2] == "1.00" and rows[0][4] == "1.00 |"


def test_coco_eval_section_on_a_small_set():
    command = [sys.executable, "tools/benchmark.py", "--section", "coco-eval", "--matmul-size",
               "64", "--eval-images", "40", "--eval-repeats", "2"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("## COCO bbox evaluation: "))
    assert re.fullmatch(r"## COCO bbox evaluation: 40 images, \d+ ground-truth boxes in 80 "
                        r"classes, 4000 detections", lines[at])  # fmt: skip
    assert re.fullmatch(r"Same 12 statistics \(largest difference .*; AP 0\.\d{4}\)", lines[at + 1])
    assert lines[at + 2] == "| backend | s per evaluation | speed-up |"
    assert lines[at + 4].startswith("| pycocotools COCOeval | ") and lines[at + 4].endswith(
        " 1.0x |"
    )
    assert lines[at + 5].startswith("| faster-coco-eval | ")
