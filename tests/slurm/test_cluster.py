"""
SLURM for real: jobs submitted with tools/submit.py and tools/ablate.py --launcher slurm to the
one-node cluster that `make test-slurm` starts on localhost (scripts/slurm_cluster.sh), as a user
submits them. CPU workers, tiny shapes images. Skipped unless `make test-slurm` runs them.

- a 2-task training job finishes and evaluates (and is the reference of the next test);
- a job with a 1-minute limit gets SLURM's time-limit signal, saves, requeues itself and resumes
  (as many times as it takes) and ends with the uninterrupted job's final weights;
- a failing job is reported as failed and not requeued;
- a 3-setting ablation is submitted at once, is not submitted twice, and is tabulated.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from retina_plugin.slurm import job_state, recorded_jobs
from retina_plugin.slurm.queue import ACTIVE_STATES
from tests.utils import (
    QUICKSTART,
    REPO_ROOT,
    generate_tiny_shapes,
    tiny_overrides,
    tiny_shapes_overrides,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("RETINA_PLUGIN_SLURM_TESTS") != "1" or not os.environ.get("SLURM_CONF"),
    reason="needs the local SLURM cluster of `make test-slurm`",
)

SUBMIT = os.path.join(REPO_ROOT, "tools", "submit.py")
ABLATE = os.path.join(REPO_ROOT, "tools", "ablate.py")
GAMMA = "MODEL.RETINANET.FOCAL_LOSS_GAMMA"
MAX_ITER = 300  # about 60 s of training with 2 CPU workers: longer than the time-limit signal
TWO_CPU_TASKS = ["--gpus-per-node", "0", "--tasks-per-node", "2", "--cpus-per-task", "1"]


def run(*command, timeout=300):
    return subprocess.run(
        [sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def job_id_of(stdout: str) -> str:
    match = re.search(r"^Submitted job (\d+) for ", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def wait_for(job_id: str, timeout=600) -> str:
    """Wait until SLURM's job has ended; returns its final state."""
    deadline = time.monotonic() + timeout
    while (state := job_state(job_id)) in ACTIVE_STATES:
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout} s"
        time.sleep(2)
    return state


def scontrol(job_id: str) -> dict:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S+)", out))


def training_opts(root, output_dir, max_iter=MAX_ITER):
    return tiny_overrides(root / "shapes", output_dir, max_iter=max_iter) + [
        "MODEL.DEVICE", "cpu",
        "MODEL.FOCAL_RETINA.COMPILE", "False",
        "SOLVER.CHECKPOINT_PERIOD", "100000",
        "SOLVER.FOCAL_RETINA.LOG_PERIOD", "20",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    generate_tiny_shapes(root / "shapes")
    return root


@pytest.fixture(scope="module")
def reference(root):
    """A 2-task training with time to spare: submitted, finished, evaluated."""
    output_dir = root / "reference"
    argv = [*TWO_CPU_TASKS, "--time", "10", "--config-file", QUICKSTART]
    argv += training_opts(root, output_dir)
    dry_run = run(SUBMIT, "--dry-run", *argv)
    assert dry_run.returncode == 0, dry_run.stderr
    result = run(SUBMIT, *argv)
    assert result.returncode == 0, result.stderr
    job_id = job_id_of(result.stdout)
    # A second job on the same OUTPUT_DIR is refused while the first is queued or running.
    again = run(SUBMIT, *argv)
    assert again.returncode == 1
    assert re.search(
        rf"submit\.py: Job {job_id} of {output_dir} is (PENDING|RUNNING|CONFIGURING) \(log: ",
        again.stderr,
    ), again.stderr
    return output_dir, job_id, result.stdout, dry_run.stdout, wait_for(job_id)


def test_a_two_task_job_trains_and_evaluates(reference):
    output_dir, job_id, printed, dry_run, state = reference
    assert state == "COMPLETED"
    record = recorded_jobs(str(output_dir))[-1]
    assert record["job_id"] == job_id
    assert record["log"] == str(output_dir / "slurm" / job_id / f"{job_id}_0_log.out")
    assert f"  log (task 0): {record['log']}\n" in printed
    # The script submitted is the one --dry-run printed.
    submitted = (output_dir / "slurm" / job_id / f"{job_id}_submission.sh").read_text()
    assert dry_run.startswith(submitted)
    assert "#SBATCH --ntasks-per-node=2\n" in submitted
    assert "#SBATCH --signal=USR2@120\n" in submitted
    # Two workers (ranks from SLURM), trained to the end and evaluated.
    assert "Worker 0 of 2" in (output_dir / "log.txt").read_text()
    assert "Worker 1 of 2" in (output_dir / "log.txt.rank1").read_text()
    with open(output_dir / "final_results.json") as f:
        assert 0 <= json.load(f)["bbox"]["AP"] <= 100
    assert torch.load(output_dir / "model_final.pth", weights_only=True)["iteration"] == (
        MAX_ITER - 1
    )
    assert scontrol(job_id)["Restarts"] == "0"


def test_the_time_limit_signal_saves_requeues_and_resumes_exactly(root, reference):
    """A 1-minute limit and a signal asked for 35 s before it. SLURM sends it up to a minute
    early (its time-limit check runs every 30 s): it came 4 s into a run here, while the tasks'
    Python was still importing torch, and 21-22 s into others. Whenever it comes, the job saves
    (or, before training, just requeues) and is requeued until it has trained MAX_ITER
    iterations; runs ended before their first iteration count as timeouts too, hence the high
    --max-timeouts."""
    reference_dir = reference[0]
    output_dir = root / "time_limit"
    argv = [*TWO_CPU_TASKS, "--time", "1", "--signal-delay", "35", "--max-timeouts", "30"]
    result = run(SUBMIT, *argv, "--config-file", QUICKSTART, *training_opts(root, output_dir))
    assert result.returncode == 0, result.stderr
    job_id = job_id_of(result.stdout)
    assert wait_for(job_id, timeout=900) == "COMPLETED"
    restarts = int(scontrol(job_id)["Restarts"])
    assert restarts >= 1
    log = (output_dir / "slurm" / job_id / f"{job_id}_0_log.out").read_text()
    saved = re.findall(r"Preempted: SIGUSR2 at iteration (\d+): saved model_(\d+)\.pth", log)
    assert saved and all(int(a) == int(b) for a, b in saved)
    assert log.count("Requeued job") == restarts
    starts = [int(i) for i in re.findall(r"Starting training from iteration (\d+)", log)]
    assert starts[0] == 0
    # Each requeued run resumes after the iteration the previous one saved.
    for iteration, _ in saved:
        assert int(iteration) + 1 in starts
    # The same job, the same OUTPUT_DIR, the uninterrupted job's weights.
    assert [r["job_id"] for r in recorded_jobs(str(output_dir))] == [job_id]
    weights = torch.load(output_dir / "model_final.pth", weights_only=True)["model"]
    expected = torch.load(reference_dir / "model_final.pth", weights_only=True)["model"]
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(weights[name], value), name
    assert (output_dir / "final_results.json").exists()


def test_a_signal_while_the_tasks_start_requeues_the_job(root):
    """SIGUSR2 (scancel --signal) as soon as task 0's Python has started, while it imports torch
    before submitit's handler exists: the job is requeued, not FAILED (start_task.py)."""
    output_dir = root / "early_signal"
    argv = [*TWO_CPU_TASKS, "--time", "10", "--config-file", QUICKSTART]
    result = run(SUBMIT, *argv, *training_opts(root, output_dir, max_iter=20))
    assert result.returncode == 0, result.stderr
    job_id = job_id_of(result.stdout)
    log = output_dir / "slurm" / job_id / f"{job_id}_0_log.out"
    deadline = time.monotonic() + 300
    while not (log.exists() and "Starting with JobEnvironment" in log.read_text()):
        assert time.monotonic() < deadline, f"job {job_id} did not start"
        time.sleep(0.05)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    assert wait_for(job_id) == "COMPLETED"
    assert int(scontrol(job_id)["Restarts"]) >= 1
    first_run = log.read_text().split("Requeued job")[0]
    assert "Caught signal SIGUSR2" in first_run
    assert "Rank of current process" not in first_run  # caught before training began
    assert torch.load(output_dir / "model_final.pth", weights_only=True)["iteration"] == 19


def test_a_failing_job_is_failed_not_requeued(root):
    output_dir = root / "failing"
    opts = training_opts(root, output_dir, max_iter=4) + ["DATASETS.TRAIN", "('no_such_set',)"]
    result = run(SUBMIT, *TWO_CPU_TASKS, "--time", "10", "--config-file", QUICKSTART, *opts)
    assert result.returncode == 0, result.stderr
    job_id = job_id_of(result.stdout)
    assert wait_for(job_id) == "FAILED"
    info = scontrol(job_id)
    assert info["Restarts"] == "0" and info["ExitCode"] != "0:0"
    log = (output_dir / "slurm" / job_id / f"{job_id}_0_log.out").read_text()
    assert "no_such_set" in log and "Requeued" not in log


def test_an_ablation_is_submitted_at_once_and_collected(root):
    output = root / "ablation"
    argv = [
        "--launcher", "slurm", "--gpus-per-node", "0", "--cpus-per-task", "1", "--time", "10",
        "--config-file", QUICKSTART, "--sweep", f"{GAMMA}=0,1,2", "--output", str(output),
        *tiny_shapes_overrides(root / "shapes", max_iter=4),
        "MODEL.DEVICE", "cpu", "MODEL.FOCAL_RETINA.COMPILE", "False",
    ]  # fmt: skip
    first = run(ABLATE, *argv)
    assert first.returncode == 0, first.stdout + first.stderr
    job_ids = re.findall(r"^gamma=\d: submitted job (\d+) ", first.stdout, re.MULTILINE)
    assert len(job_ids) == 3, first.stdout
    # Run again at once: nothing is submitted twice (each setting is queued, running or done).
    second = run(ABLATE, *argv)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "submitted job" not in second.stdout
    statuses = re.findall(r"^(queued|running|done): (.*)$", second.stdout, re.MULTILINE)
    assert sorted(n for _, names in statuses for n in names.split(", ")) == [
        "gamma=0", "gamma=1", "gamma=2",
    ]  # fmt: skip
    for job_id in job_ids:
        assert wait_for(job_id) == "COMPLETED"
    collected = run(ABLATE, "--collect", str(output))
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "done: gamma=0, gamma=1, gamma=2\n" in collected.stdout
    table = (output / "results.md").read_text().splitlines()
    assert table[0].startswith("| setting | gamma | AP |")
    for line, name in zip(table[2:5], ("gamma=0", "gamma=1", "gamma=2")):
        with open(output / name / "final_results.json") as f:
            ap = json.load(f)["bbox"]["AP"]
        assert line.startswith(f"| {name} | {name[6:]}.0 | {ap:.1f} |")
    third = run(ABLATE, *argv)
    assert third.returncode == 0 and "submitted job" not in third.stdout
    assert third.stdout.count("done, skipped") == 3


def test_a_failed_setting_is_listed_with_its_log_and_submitted_again(root):
    """A setting whose job fails (its test set does not exist: found after training) is 'failed'
    in the table, with the job's log; the next run submits it again, and only it."""
    grid = root / "grid_with_a_failure.yaml"
    grid.write_text(
        f"base: {QUICKSTART}\nsettings:\n  fine:\n    {GAMMA}: 2.0\n"
        "  broken:\n    DATASETS.TEST: [no_such_set]\n"
    )
    output = root / "ablation_with_a_failure"
    argv = [
        "--launcher", "slurm", "--gpus-per-node", "0", "--cpus-per-task", "1", "--time", "10",
        "--grid", str(grid), "--output", str(output),
        *tiny_shapes_overrides(root / "shapes", max_iter=4),
        "MODEL.DEVICE", "cpu", "MODEL.FOCAL_RETINA.COMPILE", "False",
    ]  # fmt: skip
    first = run(ABLATE, *argv)
    assert first.returncode == 0, first.stdout + first.stderr
    job_ids = dict(re.findall(r"^(\w+): submitted job (\d+) ", first.stdout, re.MULTILINE))
    assert sorted(job_ids) == ["broken", "fine"], first.stdout
    assert wait_for(job_ids["fine"]) == "COMPLETED"
    assert wait_for(job_ids["broken"]) == "FAILED"
    log = str(output / "broken" / "slurm" / job_ids["broken"] / f"{job_ids['broken']}_0_log.out")
    collected = run(ABLATE, "--collect", str(output))
    assert collected.returncode == 1, collected.stdout + collected.stderr
    assert "done: fine\n" in collected.stdout and "failed: broken\n" in collected.stdout
    table = (output / "results.md").read_text()
    assert re.search(r"^\| broken \| [^|]+ \| \['no_such_set'\] \| FAILED \| - \|", table, re.M), (
        table
    )
    assert f"- broken: failed; log: `{log}`" in table
    assert "no_such_set" in open(log).read()
    again = run(ABLATE, *argv)
    resubmitted = re.findall(r"^(\w+): submitted job (\d+) ", again.stdout, re.MULTILINE)
    assert [name for name, _ in resubmitted] == ["broken"], again.stdout + again.stderr
    assert wait_for(resubmitted[0][1]) == "FAILED"
