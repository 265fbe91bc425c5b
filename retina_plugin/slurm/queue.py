"""
What SLURM says about a job, and the jobs recorded in an OUTPUT_DIR.

``squeue`` knows queued and running jobs; ``scontrol show job`` also knows jobs that ended less
than the cluster's MinJobAge ago (no accounting database needed). A job neither knows has ended
long ago: its outcome is then read from its folder (see :mod:`retina_plugin.sweeps.cluster`).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess

__all__ = ["JOBS_FILE", "ACTIVE_STATES", "job_state", "record_job", "recorded_jobs", "active_job"]

JOBS_FILE = "slurm_jobs.jsonl"  # in OUTPUT_DIR: one line per submitted job

# States of a job that is queued or running (sbatch's "job state codes"); it must not be
# submitted again meanwhile.
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING_STATES = {
    "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING",
    "STAGE_OUT", "STOPPED",
}  # fmt: skip
ACTIVE_STATES = QUEUED_STATES | RUNNING_STATES


def _run(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def job_state(job_id: str) -> str | None:
    """SLURM's state of `job_id` ("PENDING", "RUNNING", "COMPLETED", "FAILED", ...), or None
    when SLURM no longer knows it."""
    out = _run(["squeue", "--noheader", "--jobs", str(job_id), "--format", "%T"])
    if out and out.strip():
        return out.split()[0]
    out = _run(["scontrol", "show", "job", "--oneliner", str(job_id)])
    match = re.search(r"\bJobState=(\S+)", out or "")
    return match.group(1) if match else None


def record_job(output_dir: str, record: dict):
    """Append a submitted job (its id, logs, command) to OUTPUT_DIR/slurm_jobs.jsonl."""
    os.makedirs(output_dir, exist_ok=True)
    record = {"submitted": datetime.datetime.now().isoformat(timespec="seconds"), **record}
    with open(os.path.join(output_dir, JOBS_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")


def recorded_jobs(output_dir: str) -> list[dict]:
    """The jobs submitted for OUTPUT_DIR, oldest first."""
    try:
        with open(os.path.join(output_dir, JOBS_FILE)) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def active_job(output_dir: str) -> tuple[dict, str] | None:
    """(record, state) of the last job of OUTPUT_DIR when it is queued or running, else None."""
    jobs = recorded_jobs(output_dir)
    if not jobs:
        return None
    state = job_state(jobs[-1]["job_id"])
    return (jobs[-1], state) if state in ACTIVE_STATES else None
