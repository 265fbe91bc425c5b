"""A data-loader worker killed by a signal (the OOM killer, a stray kill -9) during a train_net.py
run: PyTorch's DataLoader notices, and the run ends at once with its error naming the worker's
pid, rather than hanging on a batch that never comes."""

import os
import signal
import subprocess
import sys
import time

from tests.utils import QUICKSTART, REPO_ROOT, tiny_overrides


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def test_a_killed_loader_worker_ends_the_run_naming_it(tiny_trained, tmp_path):
    root, _, _ = tiny_trained  # its generated shapes images (read only)
    overrides = tiny_overrides(root / "shapes", tmp_path / "run", max_iter=100000) + [
        "DATALOADER.NUM_WORKERS", "2", "DATASETS.TEST", "()",
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0", "MODEL.DEVICE", "cpu",
    ]  # fmt: skip
    log = tmp_path / "stdout.txt"
    with open(log, "w") as stdout, open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file",
             QUICKSTART, *overrides],
            cwd=REPO_ROOT, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            started = "Starting training from iteration 0" in log.read_text()
            workers = _children(process.pid)
            if started and len(workers) == 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert len(workers) == 2, "no 2 data-loader workers within 240 s"
        time.sleep(1.0)  # a few iterations in
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        process.wait(timeout=120)
        ended_in = time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    # PyTorch says one or the other, depending on which of its checks sees the death first.
    assert last in (
        f"RuntimeError: DataLoader worker (pid {victim}) is killed by signal: Killed.",
        f"RuntimeError: DataLoader worker (pid(s) {victim}) exited unexpectedly",
    ), stderr[-3000:]
    assert ended_in < 60
    assert _children(process.pid) == []
