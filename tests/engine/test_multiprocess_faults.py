"""--num-gpus 2 on the CPU (gloo) with one worker failing during training: the run stops at once
with that worker's error, not after the 30-minute collective timeout, and leaves no process."""

import os
import subprocess
import sys
import time

import pytest

from tests.utils import QUICKSTART, REPO_ROOT, tiny_overrides

MAX_ITER = 4
# Without the fix the failing case below waits for Detectron2's collective timeout (30 min).
PROMPT_S = 120


def _session_processes(session_id: int) -> list:
    """PIDs of the processes still in `session_id` (all that the run started)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session_id:  # fields after "(comm)": state ppid pgrp session
            pids.append(int(entry))
    return pids


@pytest.mark.parametrize(
    "fail_rank, fail_at",
    [
        # The last iteration: Detectron2's EvalHook then evaluated on the failed worker, whose
        # collectives waited for the other, itself waiting in the gradient all-reduce: a hang.
        (1, MAX_ITER - 1),
        (0, 1),  # mid-run, the main process
    ],
)
def test_one_failing_worker_stops_all_promptly(tmp_path, fail_rank, fail_at):
    output_dir = tmp_path / "output"
    overrides = tiny_overrides(tmp_path / "shapes", output_dir, max_iter=MAX_ITER)
    overrides += ["SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "1"]
    overrides += ["TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0"]
    command = [
        sys.executable, "-m", "tests.train_net_with_fault",
        "--fail-rank", str(fail_rank), "--fail-at-iter", str(fail_at),
        "--num-gpus", "2", "--dist-url", "auto", "--config-file", QUICKSTART, *overrides,
    ]  # fmt: skip
    start = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its workers and their data-loader workers share its session
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
    elapsed = time.monotonic() - start

    assert process.returncode == 1, stderr[-3000:]
    assert elapsed < PROMPT_S
    # torch's launcher re-raises the failed worker's traceback in the parent.
    header = f"-- Process {fail_rank} terminated with the following error:\n"
    assert header in stderr, stderr[-3000:]
    report = stderr.split(header, 1)[1]
    assert f"\nRuntimeError: Injected fault: rank {fail_rank} fails at iteration {fail_at}.\n" in (
        report
    )
    # A failed run neither evaluates nor claims to have finished.
    assert not (output_dir / "final_results.json").exists()
    assert not (output_dir / "inference").exists()
    assert not (output_dir / "model_final.pth").exists()
    # No worker or data-loader worker outlives the run (they watch their parent every 5 s).
    deadline = time.monotonic() + 15
    while _session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session_processes(process.pid) == []
