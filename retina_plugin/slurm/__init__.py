"""
SLURM through submitit: one job per distributed training, every task a worker, requeued with
the exact iteration on the time-limit signal. ``tools/submit.py`` and ``tools/ablate.py
--launcher slurm`` are its command lines; ``make test-slurm`` tests it on a real local cluster.

- :mod:`.options`: the cluster options and the executor parameters they become.
- :mod:`.job`: what each task runs, and the requeue (submitit's checkpoint protocol).
- :mod:`.submit`: the checks before submitting, the sbatch script, the record in OUTPUT_DIR.
- :mod:`.queue`: a job's state (squeue / scontrol) and the jobs recorded in an OUTPUT_DIR.
"""

from .job import TrainingJob, load_main, with_resume, worker_environment
from .options import add_cluster_arguments, executor_parameters, parse_time_minutes, tasks_per_node
from .queue import JOBS_FILE, active_job, job_state, record_job, recorded_jobs
from .submit import SubmittedJob, check_train_arguments, sbatch_script, submit_training

__all__ = [
    "TrainingJob",
    "load_main",
    "with_resume",
    "worker_environment",
    "add_cluster_arguments",
    "executor_parameters",
    "parse_time_minutes",
    "tasks_per_node",
    "JOBS_FILE",
    "active_job",
    "job_state",
    "record_job",
    "recorded_jobs",
    "SubmittedJob",
    "check_train_arguments",
    "sbatch_script",
    "submit_training",
]
