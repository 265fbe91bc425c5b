"""
A sweep on SLURM: every setting that is not done is submitted at once as a job of its own
(:func:`retina_plugin.slurm.submit_training`), and the tables are written from whatever has
finished, with the state of every other setting: queued, running, failed (with its log) or
preempted.

A setting is never submitted twice: one whose folder holds results is done, and one whose last
job (OUTPUT/<setting>/slurm_jobs.jsonl) is still queued or running is left to it. Running the
sweep again submits the settings whose job failed or stopped, each resuming from its last
checkpoint; ``--collect`` only writes the tables.
"""

from __future__ import annotations

import os

from ..slurm import job_state, recorded_jobs, sbatch_script, submit_training
from ..slurm.options import executor_parameters
from ..slurm.queue import QUEUED_STATES, RUNNING_STATES
from .folder import SWEEP_FILE, load_command, save_command, write_record
from .grid import Grid
from .plan import PlannedSetting, handle_changed, plan_settings, print_plan
from .reports import write_reports

__all__ = [
    "SWEEP_FILE",
    "setting_status",
    "submit_settings",
    "collect",
    "submit_and_collect",
    "save_command",
    "load_command",
]

# SLURM's states of a job that ended without finishing its work but may continue.
_STOPPED_STATES = {"PREEMPTED", "TIMEOUT", "DEADLINE"}


def _log_says_preempted(log: str) -> bool:
    """Whether the last run in a job's log ended saving a preempted iteration."""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    last_run = text[text.rfind("Starting with") :]  # submitit's first line of every run
    return "Preempted: " in last_run


def setting_status(planned: PlannedSetting) -> tuple[str, str]:
    """(status, log) of a setting that is not done: "not submitted", "queued", "running",
    "failed" or "preempted" (stopped with its iteration saved and not requeued)."""
    jobs = recorded_jobs(planned.folder)
    if not jobs:
        return "not submitted", ""
    last = jobs[-1]
    state = job_state(last["job_id"])
    if state in QUEUED_STATES:
        return "queued", last["log"]
    if state in RUNNING_STATES:
        return "running", last["log"]
    if state in _STOPPED_STATES or _log_says_preempted(last["log"]):
        return "preempted", last["log"]
    return "failed", last["log"]


def submit_settings(
    plan: list[PlannedSetting], base: str, train_script: str, cluster_args, dry_run: bool
) -> int:
    """Submit every setting that is neither done nor queued or running; returns how many.
    Each plan entry's command holds train_net.py's arguments (plan_settings without a
    train command)."""
    submitted = 0
    for planned in plan:
        name = planned.setting.name
        if planned.state == "done":
            continue
        status, log = setting_status(planned)
        if status in ("queued", "running"):
            jobs = recorded_jobs(planned.folder)
            print(f"{name}: job {jobs[-1]['job_id']} is {status}, not submitted again ({log})")
            continue
        if dry_run:
            print(f"{name}: would be submitted")
            continue
        os.makedirs(planned.folder, exist_ok=True)
        write_record(planned.folder, base, planned.overrides, planned.config)
        job = submit_training(train_script, planned.command, cluster_args)
        print(f"{name}: submitted job {job.job_id} (log: {job.log})", flush=True)
        submitted += 1
    if dry_run:
        parameters = executor_parameters(cluster_args, job_name=plan[0].setting.name)
        job_dir = cluster_args.job_dir or os.path.join(plan[0].folder, "slurm")
        print(f"sbatch script of {plan[0].setting.name}:\n{sbatch_script(parameters, job_dir)}")
    return submitted


def collect(plan: list[PlannedSetting], grid: Grid, base: str, output: str, slurm: bool) -> dict:
    """Write the tables from the settings' folders, each unfinished setting with its status;
    returns {status: [setting names]}."""
    by_status: dict[str, list[str]] = {}
    for planned in plan:
        if planned.state == "done":
            status = "done"
        elif planned.state == "changed":
            status = "changed"  # trained with another config (its setting.yaml)
        elif slurm:
            status, planned.log = setting_status(planned)
        else:
            status = "not run"
        planned.outcome = "" if status == "done" else status
        by_status.setdefault(status, []).append(planned.setting.name)
    write_reports(plan, grid, base, output)
    return by_status


def submit_and_collect(
    grid: Grid,
    base: str,
    opts: list[tuple[str, str]],
    output: str,
    train_script: str,
    cluster_args,
    *,
    slurm: bool = True,
    submit: bool = True,
    dry_run: bool = False,
    redo_changed: bool = False,
    record: list[str] | None = None,
) -> dict:
    """Check and plan every setting, submit (`submit`, on `slurm`) those to run, then write the
    tables and print the settings by status; returns {status: [setting names]} ({} in a
    dry run). Raises ValueError, before anything is submitted, for a bad or changed setting.
    `record` (ablate.py's arguments) is saved in OUTPUT/sweep.json once the checks pass."""
    # train_net.py's arguments only: the job chooses the script and the workers.
    plan = plan_settings(os.path.abspath(base), opts, grid, output, [])
    if submit:
        handle_changed(plan, redo_changed, dry_run)
        print_plan(plan)
        if record is not None and not dry_run:
            save_command(output, record)
        submit_settings(plan, base, train_script, cluster_args, dry_run)
        if dry_run:
            return {}
    by_status = collect(plan, grid, base, output, slurm)
    for status, names in by_status.items():
        print(f"{status}: {', '.join(names)}")
    print(f"table: {os.path.join(output, 'results.md')}")
    return by_status
