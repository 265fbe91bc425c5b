"""
Submitting a training to SLURM with submitit: the checks made before anything is submitted, the
sbatch script, and the record of the job in OUTPUT_DIR.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

from detectron2.engine import default_argument_parser

from ..config import load_config
from ..sweeps.overrides import check_key, merge_override
from .job import TrainingJob, load_main
from .options import executor_parameters
from .queue import active_job, record_job

__all__ = ["SubmittedJob", "check_train_arguments", "sbatch_script", "submit_training"]


def _submitit():
    try:
        import submitit  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(
            "SLURM submission needs submitit: pip install 'submitit>=1.5' "
            "(or pip install -e '.[slurm]' in the repository)."
        ) from error
    return submitit


@dataclass
class SubmittedJob:
    """A submitted (or, in a dry run, planned) job."""

    job_id: str | None  # None in a dry run
    output_dir: str
    job_dir: str  # submitit's folder of this job (its pickles, script and logs)
    log: str  # task 0's log (stdout and stderr): the run's log
    sbatch: str  # the sbatch script


def check_train_arguments(argv: list[str]):
    """train_net.py's arguments for a SLURM job: parsed, with their config loaded (every key
    checked); returns (args, cfg). Raises ValueError for what cannot work on SLURM."""
    args = default_argument_parser().parse_args(argv)
    if args.num_gpus != 1 or args.num_machines != 1 or args.machine_rank != 0:
        raise ValueError(
            "--num-gpus / --num-machines / --machine-rank are train_net.py's own launcher: on "
            "SLURM every task is one worker, so give --gpus-per-node and --nodes instead."
        )
    if not args.config_file:
        raise ValueError("No --config-file: the job needs a config to train.")
    if len(args.opts) % 2:
        raise ValueError(f"The KEY VALUE options {args.opts} have no value for {args.opts[-1]!r}.")
    cfg = load_config(args.config_file)
    for key, text in zip(args.opts[0::2], args.opts[1::2]):
        check_key(cfg, key, "the command line", args.config_file)
        merge_override(cfg, key, text, "the command line")
    requeue_signal = "SIG" + _submitit().JobEnvironment.USR_SIG
    signals = list(cfg.SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS)
    if requeue_signal not in signals:
        raise ValueError(
            f"SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS = {signals} leaves out {requeue_signal}, "
            "the signal SLURM sends before the time limit: add it, or the job would requeue "
            "without saving the iteration it reached."
        )
    return args, cfg


def task_python() -> str:
    """The command that starts each task's Python (submitit's ``python``): this interpreter,
    with submitit's requeue signal blocked until the job's handler is in place
    (:mod:`retina_plugin.slurm.start_task`)."""
    start = os.path.join(os.path.dirname(os.path.abspath(__file__)), "start_task.py")
    requeue_signal = "SIG" + _submitit().JobEnvironment.USR_SIG
    return shlex.join([sys.executable, "-I", "-S", start, requeue_signal])


def sbatch_script(parameters: dict, job_dir: str) -> str:
    """The sbatch script submitit writes for these executor parameters (a job of job_dir)."""
    from submitit.slurm import slurm  # noqa: PLC0415

    folder = os.path.join(job_dir, "%j")
    # What SlurmExecutor runs in each task (SlurmExecutor._submitit_command_str).
    command = f"{task_python()} -u -m submitit.core._submit {shlex.quote(folder)}"
    return slurm._make_sbatch_string(command=command, folder=folder, **parameters)


def submit_training(
    script: str, argv: list[str], cluster_args, dry_run: bool = False
) -> SubmittedJob:
    """
    Submit one job that trains ``script``'s ``main`` (train_net.py) with `argv` on the cluster
    that `cluster_args` (:func:`retina_plugin.slurm.options.add_cluster_arguments`) describes.
    Raises ValueError, before anything is submitted, for bad arguments or when a job of the same
    OUTPUT_DIR is still queued or running.
    """
    submitit = _submitit()
    args, cfg = check_train_arguments(argv)
    if not os.path.isfile(script):
        raise FileNotFoundError(f"The train script {script} does not exist (--train-script).")
    load_main(script)  # what every task will run: it must define main(args)
    output_dir = os.path.abspath(cfg.OUTPUT_DIR)
    job_dir = os.path.abspath(cluster_args.job_dir or os.path.join(output_dir, "slurm"))
    name = os.path.basename(os.path.normpath(output_dir))
    parameters = executor_parameters(cluster_args, job_name=name)
    script_text = sbatch_script(parameters, job_dir)
    if dry_run:
        log = os.path.join(job_dir, "%j", "%j_0_log.out")
        return SubmittedJob(None, output_dir, job_dir, log, script_text)
    running = active_job(output_dir)
    if running is not None:
        record, state = running
        raise ValueError(
            f"Job {record['job_id']} of {output_dir} is {state} (log: {record['log']}): it "
            "would write the same checkpoints. Wait for it, cancel it (scancel "
            f"{record['job_id']}), or choose another OUTPUT_DIR."
        )
    executor = submitit.SlurmExecutor(
        folder=os.path.join(job_dir, "%j"),
        max_num_timeout=cluster_args.max_timeouts,
        python=task_python(),
    )
    executor.update_parameters(**parameters)
    job = executor.submit(TrainingJob(script, argv))
    log = str(job.paths.stdout).replace("%t", "0")
    submitted = SubmittedJob(job.job_id, output_dir, str(job.paths.folder), log, script_text)
    record_job(
        output_dir,
        {
            "job_id": job.job_id,
            "log": log,
            "job_dir": submitted.job_dir,
            "command": [script, *TrainingJob(script, argv).argv],
            "nodes": parameters["nodes"],
            "tasks_per_node": parameters["ntasks_per_node"],
            "gpus_per_node": parameters.get("gpus_per_node", 0),
        },
    )
    return submitted
