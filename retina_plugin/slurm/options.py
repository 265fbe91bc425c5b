"""
The cluster options of a SLURM submission (``tools/submit.py``, ``tools/ablate.py --launcher
slurm``) and the submitit ``SlurmExecutor`` parameters they become.

One job runs one distributed training: ``--nodes`` nodes with one task per worker, so
``--gpus-per-node`` tasks on each (``--tasks-per-node`` on CPU nodes). Every task is a worker of
the run (rank and world size from SLURM's environment; see :mod:`retina_plugin.slurm.job`).
"""

from __future__ import annotations

import argparse
import re

__all__ = [
    "add_cluster_arguments",
    "executor_parameters",
    "parse_time_minutes",
    "tasks_per_node",
]

# SLURM's --time formats: "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S".
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time_minutes(text: str) -> int:
    """SLURM's ``--time`` text as whole minutes (rounded up): ``"90"`` -> 90,
    ``"2:00:00"`` -> 120, ``"1-12"`` -> 2160, ``"0:30"`` (30 s) -> 1."""
    match = _TIME.match(str(text).strip())
    if not match:
        raise ValueError(
            f"--time {text!r} is not a SLURM time: use minutes (90), H:MM:SS (2:00:00), "
            "D-HH (1-12) or D-HH:MM:SS."
        )
    days, first, second, third = match.groups()
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif third is not None:  # H:M:S
        total = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:  # M:S
        total = int(first) * 60 + int(second)
    else:  # M
        total = int(first) * 60
    if total <= 0:
        raise ValueError(f"--time {text!r} is zero; give the job's time limit.")
    return -(-total // 60)


def add_cluster_arguments(parser: argparse.ArgumentParser):
    """Add the cluster options (sbatch's names) to `parser`, in a group of their own."""
    group = parser.add_argument_group("SLURM (submitit)")
    group.add_argument("--nodes", type=int, default=1, help="nodes of the job (sbatch --nodes)")
    group.add_argument(
        "--gpus-per-node", type=int, default=8,
        help="GPUs per node; one worker task per GPU (0: CPU nodes, see --tasks-per-node)",
    )  # fmt: skip
    group.add_argument(
        "--tasks-per-node", type=int,
        help="worker tasks per node (default: --gpus-per-node, or 1 on CPU nodes)",
    )  # fmt: skip
    group.add_argument("--cpus-per-task", type=int, default=10, help="CPUs of each worker")
    group.add_argument("--mem", help="memory per node, e.g. 400G (sbatch --mem)")
    group.add_argument("--partition", help="sbatch --partition")
    group.add_argument(
        "--time", default="72:00:00",
        help="time limit of each run of the job (sbatch --time; minutes, H:MM:SS or D-HH:MM:SS)",
    )  # fmt: skip
    group.add_argument("--account", help="sbatch --account")
    group.add_argument("--qos", help="sbatch --qos")
    group.add_argument("--constraint", help="sbatch --constraint")
    group.add_argument("--comment", help="sbatch --comment")
    group.add_argument("--job-name", help="sbatch --job-name (default: the OUTPUT_DIR's name)")
    group.add_argument(
        "--job-dir",
        help="submitit's folder: the job's pickles, sbatch script and logs "
        "(default: OUTPUT_DIR/slurm)",
    )
    group.add_argument(
        "--signal-delay", type=int, default=120, metavar="SECONDS",
        help="SLURM signals the job (SIGUSR2) this long before its time limit; the workers then "
        "save the exact iteration and the job requeues itself (SLURM may signal up to 60 s "
        "earlier than asked)",
    )  # fmt: skip
    group.add_argument(
        "--max-timeouts", type=int, default=10,
        help="how many times a job that reached its time limit is requeued (preemptions are "
        "not counted)",
    )  # fmt: skip


def tasks_per_node(args) -> int:
    """Worker tasks on each node: --tasks-per-node, else one per GPU, else 1."""
    if args.tasks_per_node is not None:
        if args.gpus_per_node and args.tasks_per_node != args.gpus_per_node:
            raise ValueError(
                f"--tasks-per-node {args.tasks_per_node} with --gpus-per-node "
                f"{args.gpus_per_node}: each worker task trains on one GPU, so they must be equal "
                "(leave --tasks-per-node out on GPU nodes)."
            )
        return args.tasks_per_node
    return args.gpus_per_node or 1


def executor_parameters(args, job_name: str) -> dict:
    """The ``SlurmExecutor.update_parameters`` keywords of the cluster options in `args`."""
    for name, least in (("nodes", 1), ("cpus_per_task", 1), ("signal_delay", 1),
                        ("gpus_per_node", 0), ("max_timeouts", 0)):  # fmt: skip
        if getattr(args, name) < least:
            raise ValueError(
                f"--{name.replace('_', '-')} {getattr(args, name)}: give {least} or more."
            )
    tasks = tasks_per_node(args)
    if tasks < 1:
        raise ValueError(f"--tasks-per-node {tasks} must be positive.")
    minutes = parse_time_minutes(args.time)
    if args.signal_delay >= minutes * 60:
        raise ValueError(
            f"--signal-delay {args.signal_delay} s is not shorter than --time {args.time}: the "
            "time-limit signal would come as the job starts. Give a longer --time or a shorter "
            "--signal-delay."
        )
    parameters = {
        "job_name": args.job_name or job_name,
        "nodes": args.nodes,
        "ntasks_per_node": tasks,
        "cpus_per_task": args.cpus_per_task,
        "time": minutes,
        "signal_delay_s": args.signal_delay,
        # One log per task (task 0's is the run's log); tracebacks go to the same file.
        "stderr_to_stdout": True,
        # `scontrol requeue` works even where the cluster's JobRequeue is 0.
        "additional_parameters": {"requeue": True},
    }
    if args.gpus_per_node:
        parameters["gpus_per_node"] = args.gpus_per_node
    optional = ("mem", "partition", "account", "qos", "constraint", "comment")
    parameters.update({name: getattr(args, name) for name in optional if getattr(args, name)})
    return parameters
