"""Preemption and exact resume through train_net.py as a scheduler drives it: a SIGTERM from
outside saves the iteration the run reached and exits with status 75; --resume then continues
the same run (the same images, augmentations, losses and final weights as a run that was never
stopped); a SIGKILL loses only what came after the last periodic checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from retina_plugin.engine.preemption import PREEMPTED_EXIT_CODE, check_signal_names
from tests.utils import QUICKSTART, REPO_ROOT, generate_tiny_shapes, parse, run_main, tiny_overrides

TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
MAX_ITER = 16
LOSSES = ("total_loss", "loss_cls", "loss_box_reg")


def _command(root, output_dir, *flags, max_iter=MAX_ITER, opts=()):
    opts = tiny_overrides(root / "shapes", output_dir, max_iter=max_iter) + [
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
        "SOLVER.FOCAL_RETINA.LOG_PERIOD", "1",  # each iteration's own losses in metrics.json
        "DATALOADER.NUM_WORKERS", "2",
        "SOLVER.CHECKPOINT_PERIOD", "4",
        *opts,
    ]  # fmt: skip
    return [sys.executable, TRAIN_NET, *flags, "--config-file", QUICKSTART, *opts]


def _run(command, timeout=600):
    return subprocess.run(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip


def _metrics(output_dir) -> dict[int, dict]:
    """{iteration: its training metrics}; a resumed run's records replace earlier ones."""
    path = output_dir / "metrics.json"
    if not path.exists():
        return {}
    records = {}
    with open(path) as f:
        for line in f:
            if line.endswith("\n") and '"total_loss"' in line:
                record = json.loads(line)
                records[record["iteration"]] = record
    return records


def _signal_at(command, output_dir, signum, iteration):
    """Start `command`; once it has logged `iteration`, send `signum`; return the result."""
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 600
    while max(_metrics(output_dir), default=-1) < iteration and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def _weights(output_dir):
    return torch.load(output_dir / "model_final.pth", weights_only=True)["model"]


def _assert_same_run(output_dir, reference_dir, ap_rel=1e-9, max_iter=MAX_ITER):
    expected, metrics = _metrics(reference_dir), _metrics(output_dir)
    assert sorted(metrics) == sorted(expected) == list(range(max_iter))
    for key in LOSSES:
        torch.testing.assert_close(
            torch.tensor([metrics[i][key] for i in range(max_iter)]),
            torch.tensor([expected[i][key] for i in range(max_iter)]),
            rtol=1e-6,
            atol=0,
        )
    weights, expected_weights = _weights(output_dir), _weights(reference_dir)
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-6, atol=1e-12)
    if ap_rel is None:
        return
    with open(reference_dir / "final_results.json") as f:
        expected_ap = json.load(f)["bbox"]["AP"]
    with open(output_dir / "final_results.json") as f:
        assert json.load(f)["bbox"]["AP"] == pytest.approx(expected_ap, rel=ap_rel)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("preemption")
    generate_tiny_shapes(root / "shapes")
    return root


@pytest.fixture(scope="module")
def uninterrupted(root):
    output_dir = root / "uninterrupted"
    result = _run(_command(root, output_dir))
    assert result.returncode == 0, result.stdout[-4000:]
    return output_dir


def test_sigterm_saves_the_iteration_and_resume_continues_exactly(root, uninterrupted):
    output_dir = root / "sigterm"
    command = _command(root, output_dir)
    status, output = _signal_at(command, output_dir, signal.SIGTERM, iteration=2)
    assert status == PREEMPTED_EXIT_CODE, output[-4000:]
    stopped = max(_metrics(output_dir))
    assert 2 <= stopped < MAX_ITER - 1
    checkpoint = f"model_{stopped:07d}.pth"
    assert (output_dir / "last_checkpoint").read_text() == checkpoint
    assert torch.load(output_dir / checkpoint, weights_only=True)["iteration"] == stopped
    assert (
        f"Preempted: SIGTERM at iteration {stopped}: saved {checkpoint} in {output_dir} "
        "(last_checkpoint points at it); no evaluation. Run again with --resume to continue "
        "this run exactly."
    ) in output
    assert "Exception during training" not in output  # a preemption is not logged as an error
    assert not (output_dir / "model_final.pth").exists()
    assert not (output_dir / "inference").exists()  # no evaluation ran
    assert not [f for f in os.listdir(output_dir) if ".tmp" in f]

    resumed = _run(_command(root, output_dir, "--resume"))
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert f"Starting training from iteration {stopped + 1}" in resumed.stdout
    _assert_same_run(output_dir, uninterrupted)


def test_sigkill_between_checkpoints_resumes_from_the_last_one_exactly(root, uninterrupted):
    output_dir = root / "sigkill"
    command = _command(root, output_dir)
    status, _ = _signal_at(command, output_dir, signal.SIGKILL, iteration=5)
    assert status == -signal.SIGKILL
    last = (output_dir / "last_checkpoint").read_text()
    assert last in ("model_0000003.pth", "model_0000007.pth", "model_0000011.pth")
    resumed = _run(_command(root, output_dir, "--resume"))
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert f"Starting training from iteration {int(last[6:13]) + 1}" in resumed.stdout
    _assert_same_run(output_dir, uninterrupted)


def test_two_processes_stop_at_the_same_iteration_and_resume_exactly(root):
    """Both workers stop at one iteration; resumed, the run is the uninterrupted 2-worker run
    (each worker continues its own loss normaliser, saved by worker 0 for both). Without
    data-loader workers (6 processes on 2 cores took 100 s; the single-process tests above cover
    resuming their streams) and without evaluation (the AP is not compared, below)."""
    opts = ("DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()")
    reference_dir = root / "two_processes_uninterrupted"
    result = _run(
        _command(
            root, reference_dir, "--num-gpus", "2", "--dist-url", "auto", max_iter=10, opts=opts
        )
    )
    assert result.returncode == 0, result.stdout[-4000:]
    output_dir = root / "two_processes"
    command = _command(
        root, output_dir, "--num-gpus", "2", "--dist-url", "auto", max_iter=10, opts=opts
    )
    status, output = _signal_at(command, output_dir, signal.SIGTERM, iteration=1)
    assert status == PREEMPTED_EXIT_CODE, output[-4000:]
    stopped = max(_metrics(output_dir))
    assert (output_dir / "last_checkpoint").read_text() == f"model_{stopped:07d}.pth"
    for log in ("log.txt", "log.txt.rank1"):  # both workers stopped there, and said so
        text = (output_dir / log).read_text()
        assert f"Preempted: SIGTERM at iteration {stopped}: saved model_{stopped:07d}.pth" in text
    assert not (output_dir / "inference").exists()
    saved = torch.load(output_dir / f"model_{stopped:07d}.pth", weights_only=True)["trainer"]
    assert len(saved["loss_normalizer_per_worker"]) == 2
    assert saved["loss_normalizer"] == saved["loss_normalizer_per_worker"][0]
    resumed = _run(command[:2] + ["--resume"] + command[2:])
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    # Same losses and weights. Not the AP (so no evaluation runs): with 2 workers, the final
    # evaluation of bitwise-equal weights gave 0.37592 in the uninterrupted run, 0.37577 in a resumed one and in two
    # --eval-only runs, and 0.37646 in a resumed one of a CI clone (2026-12-03; not explained yet).
    _assert_same_run(output_dir, reference_dir, ap_rel=None, max_iter=10)


def test_a_checkpoint_without_stream_state_resumes_with_a_warning(root, tmp_path):
    output_dir = tmp_path / "old"
    overrides = tiny_overrides(root / "shapes", output_dir, max_iter=4)
    run_main(parse("--config-file", QUICKSTART, *overrides, "SOLVER.CHECKPOINT_PERIOD", "2"))
    checkpoint = output_dir / "model_0000001.pth"
    state = torch.load(checkpoint, weights_only=True)
    del state["trainer"]["data_stream"]  # as written before exact resume
    torch.save(state, checkpoint)
    (output_dir / "last_checkpoint").write_text("model_0000001.pth")
    os.remove(output_dir / "model_final.pth")
    run_main(parse("--resume", "--config-file", QUICKSTART, *overrides))
    assert (
        f"{checkpoint} holds no data-stream position (it was written before exact resume, or "
        "with DATALOADER.FOCAL_RETINA.EXACT_RESUME False): the data order starts over at "
        "iteration 2."
    ) in (output_dir / "log.txt").read_text()


def test_unknown_signal_names():
    assert [s.name for s in check_signal_names(["SIGTERM", "SIGUSR1"])] == ["SIGTERM", "SIGUSR1"]
    with pytest.raises(ValueError) as error:
        check_signal_names(["SIGTERM", "SIGKILL"])
    assert str(error.value) == (
        "SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS = ['SIGTERM', 'SIGKILL'] names ['SIGKILL']; use "
        "names from ('SIGTERM', 'SIGUSR1', 'SIGUSR2', 'SIGINT', 'SIGHUP') (or an empty list to "
        "keep the signals' default actions)."
    )


def test_metric_printer_prints_an_iteration_once():
    """What PeriodicWriter does to a run preempted at iteration 1 with LOG_PERIOD 1: write at
    the iteration, then again after training, before IterationTimer has any history."""
    from detectron2.utils.events import CommonMetricPrinter, EventStorage

    from retina_plugin.engine.trainer import MetricPrinter

    with EventStorage(start_iter=1) as storage:
        storage.put_scalar("total_loss", 1.0)
        detectron2_printer, printer = CommonMetricPrinter(16), MetricPrinter(16)
        detectron2_printer.write()
        with pytest.raises(ZeroDivisionError):
            detectron2_printer.write()
        printer.write()
        printer.write()  # printed once, no error
        assert printer._printed == 1
