"""The sbatch script of a submission, checked without a cluster (tools/submit.py --dry-run)."""

import argparse
import os
import signal
import subprocess
import sys

import pytest

from retina_plugin import slurm
from tests.utils import QUICKSTART, REPO_ROOT

SUBMIT = os.path.join(REPO_ROOT, "tools", "submit.py")
START_TASK = os.path.join(REPO_ROOT, "retina_plugin", "slurm", "start_task.py")


@pytest.mark.parametrize(
    "text, minutes",
    [("90", 90), ("0:30", 1), ("1:30", 2), ("2:00:00", 120), ("1-12", 2160),
     ("1-00:30", 1470), ("0-0:0:59", 1), ("72:00:00", 4320)],
)  # fmt: skip
def test_slurm_time_in_minutes(text, minutes):
    assert slurm.parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "-5", "0", "0:00:00"])
def test_bad_slurm_times(text):
    with pytest.raises(ValueError, match="--time"):
        slurm.parse_time_minutes(text)


def cluster_args(*argv):
    parser = argparse.ArgumentParser()
    slurm.add_cluster_arguments(parser)
    return parser.parse_args(list(argv))


def test_executor_parameters_of_two_8_gpu_nodes():
    args = cluster_args(
        "--nodes", "2", "--gpus-per-node", "8", "--cpus-per-task", "12", "--mem", "480G",
        "--partition", "learn", "--time", "1-00:00:00", "--account", "vision", "--qos", "high",
        "--constraint", "volta32gb", "--comment", "paper deadline",
    )  # fmt: skip
    assert slurm.executor_parameters(args, job_name="coco_R50_1x") == {
        "job_name": "coco_R50_1x",
        "nodes": 2,
        "ntasks_per_node": 8,
        "cpus_per_task": 12,
        "time": 1440,
        "signal_delay_s": 120,
        "stderr_to_stdout": True,
        "additional_parameters": {"requeue": True},
        "gpus_per_node": 8,
        "mem": "480G",
        "partition": "learn",
        "account": "vision",
        "qos": "high",
        "constraint": "volta32gb",
        "comment": "paper deadline",
    }


def test_cpu_nodes_and_bad_task_counts():
    params = slurm.executor_parameters(cluster_args("--gpus-per-node", "0"), "x")
    assert params["ntasks_per_node"] == 1 and "gpus_per_node" not in params
    args = cluster_args("--gpus-per-node", "0", "--tasks-per-node", "2")
    assert slurm.executor_parameters(args, "x")["ntasks_per_node"] == 2
    with pytest.raises(ValueError) as error:
        slurm.executor_parameters(
            cluster_args("--gpus-per-node", "8", "--tasks-per-node", "4"), "x"
        )
    assert str(error.value) == (
        "--tasks-per-node 4 with --gpus-per-node 8: each worker task trains on one GPU, so they "
        "must be equal (leave --tasks-per-node out on GPU nodes)."
    )
    with pytest.raises(ValueError) as error:
        slurm.executor_parameters(cluster_args("--time", "2", "--signal-delay", "120"), "x")
    assert str(error.value) == (
        "--signal-delay 120 s is not shorter than --time 2: the time-limit signal would come as "
        "the job starts. Give a longer --time or a shorter --signal-delay."
    )
    with pytest.raises(ValueError, match=r"^--nodes 0: give 1 or more\.$"):
        slurm.executor_parameters(cluster_args("--nodes", "0"), "x")
    with pytest.raises(ValueError, match=r"^--gpus-per-node -1: give 0 or more\.$"):
        slurm.executor_parameters(cluster_args("--gpus-per-node", "-1"), "x")


def submit(*argv, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, SUBMIT, *argv], cwd=cwd, capture_output=True, text=True)


def test_dry_run_prints_the_sbatch_script_of_two_8_gpu_nodes(tmp_path):
    output = tmp_path / "coco_R50_1x"
    result = submit(
        "--dry-run", "--nodes", "2", "--gpus-per-node", "8", "--partition", "learn",
        "--time", "24:00:00", "--mem", "480G", "--config-file", QUICKSTART,
        "OUTPUT_DIR", str(output), "SOLVER.IMS_PER_BATCH", "16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = output / "slurm" / "%j"
    lines = result.stdout.splitlines()
    assert lines[:18] == [
        "#!/bin/bash",
        "",
        "# Parameters",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --job-name=coco_R50_1x",
        "#SBATCH --mem=480G",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --partition=learn",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=1440",
        "#SBATCH --wckey=submitit",
        "",
        "# command",
    ]
    assert lines[18:20] == [
        "export SUBMITIT_EXECUTOR=slurm",
        f"srun --unbuffered --output {folder}/%j_%t_log.out {sys.executable} -I -S "
        f"{START_TASK} SIGUSR2 -u -m submitit.core._submit {folder}",
    ]
    assert lines[-1] == f"# (dry run: nothing submitted; task 0 would log to {folder}/%j_0_log.out)"
    assert not output.exists()


def submit_error(*argv) -> str:
    result = submit(*argv)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stderr.splitlines()[-1]


def test_bad_submissions_are_refused_before_anything_is_submitted(tmp_path):
    common = ["--dry-run", "--config-file", QUICKSTART, "OUTPUT_DIR", str(tmp_path / "out")]
    assert submit_error("--num-gpus", "2", *common) == (
        "submit.py: --num-gpus / --num-machines / --machine-rank are train_net.py's own launcher: "
        "on SLURM every task is one worker, so give --gpus-per-node and --nodes instead."
    )
    assert submit_error(*common, "SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS", "['SIGTERM']") == (
        "submit.py: SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS = ['SIGTERM'] leaves out SIGUSR2, the "
        "signal SLURM sends before the time limit: add it, or the job would requeue without "
        "saving the iteration it reached."
    )
    assert submit_error("--time", "1h", *common) == (
        "submit.py: --time '1h' is not a SLURM time: use minutes (90), H:MM:SS (2:00:00), D-HH "
        "(1-12) or D-HH:MM:SS."
    )
    assert submit_error(*common, "SOLVER.MAX_ITERS", "1") == (
        f"submit.py: the command line: SOLVER.MAX_ITERS is not a config key (neither in "
        f"{QUICKSTART} nor in the defaults of Detectron2 and retina-plugin). Did you mean "
        "SOLVER.MAX_ITER?"
    )
    no_main = tmp_path / "no_main.py"
    no_main.write_text("print('a script without main')\n")
    assert submit_error("--train-script", str(no_main), *common) == (
        f"submit.py: {no_main} defines no main(args) function to run in each task: give a copy "
        "of train_net.py (--train-script)."
    )
    assert submit_error("--train-script", str(tmp_path / "missing.py"), *common) == (
        f"submit.py: The train script {tmp_path / 'missing.py'} does not exist (--train-script)."
    )
    assert not (tmp_path / "out").exists()


# A task that gets SIGUSR2 while it starts, before it handles the signal: it sends the signal
# to itself (a real one, pending while blocked) and then installs a handler and unblocks it as
# TrainingJob does once submitit's handler is in place.
EARLY_SIGNAL_TASK = """
import os, signal, sys
os.kill(os.getpid(), signal.SIGUSR2)
print("pending:", signal.SIGUSR2 in signal.sigpending(), flush=True)
signal.signal(signal.SIGUSR2, lambda signum, frame: print("handled", signal.Signals(signum).name))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])
print("running on")
"""


def test_a_signal_while_a_task_starts_waits_for_its_handler():
    started = subprocess.run(
        [sys.executable, "-I", "-S", START_TASK, "SIGUSR2", "-u", "-c", EARLY_SIGNAL_TASK],
        capture_output=True, text=True,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout == "pending: True\nhandled SIGUSR2\nrunning on\n"
    # Without start_task.py the signal ends the task (what SLURM reported as FAILED).
    plain = subprocess.run([sys.executable, "-c", EARLY_SIGNAL_TASK], capture_output=True)
    assert plain.returncode == -signal.SIGUSR2 and plain.stdout == b""
