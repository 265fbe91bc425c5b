"""
Running a sweep: every setting that is not done trains in a process of its own (train_net.py
with --resume, so that running the sweep again continues an interrupted setting from its last
checkpoint), and the tables are rewritten after each.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence

from .folder import LOG_FILE, append_run, read_results, save_command, write_record
from .grid import Grid
from .plan import PlannedSetting, handle_changed, plan_settings, print_plan
from .reports import write_reports


def run_training(planned: PlannedSetting, base: str) -> int:
    """Train (or resume) one setting, its output appended to its log; returns the exit status."""
    os.makedirs(planned.folder, exist_ok=True)
    write_record(planned.folder, base, planned.overrides, planned.config)
    start = time.time()
    with open(os.path.join(planned.folder, LOG_FILE), "a") as log:
        log.write(f"\n# {datetime.datetime.now().isoformat()}: {shlex.join(planned.command)}\n")
        log.flush()
        returncode = subprocess.run(
            planned.command, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    append_run(planned.folder, start, time.time() - start, returncode)
    return returncode


def train_all(
    plan: list[PlannedSetting],
    grid: Grid,
    base: str,
    output: str,
    keep_going: bool,
    max_parallel: int = 1,
) -> int:
    """Train what is not done, `max_parallel` settings at a time, rewriting the tables after
    each setting; returns the failures. Without `keep_going`, a failure stops new settings from
    starting (those already training finish)."""
    todo = [p for p in plan if p.state != "done"]
    lock = threading.Lock()
    failures = []

    def train(index: int, planned: PlannedSetting):
        name, log = planned.setting.name, os.path.join(planned.folder, LOG_FILE)
        with lock:
            if failures and not keep_going:
                planned.outcome = "not run"
                return
            verb = "resuming" if planned.state == "resume" else "training"
            print(f"[{index}/{len(todo)}] {name}: {verb} (log: {log})", flush=True)
        returncode = run_training(planned, base)
        metrics = read_results(planned.folder)
        with lock:
            if returncode == 0 and metrics is not None:
                planned.state = "done"
                print(f"[{index}/{len(todo)}] {name}: AP {metrics['AP']:.1f}", flush=True)
            else:
                failures.append(name)
                planned.outcome = "failed"
                print(f"[{index}/{len(todo)}] {name}: FAILED (exit {returncode}); log: {log}")
            write_reports(plan, grid, base, output)

    with concurrent.futures.ThreadPoolExecutor(max_parallel) as pool:
        for future in [pool.submit(train, i, p) for i, p in enumerate(todo, 1)]:
            future.result()
    return len(failures)


def run_sweep(
    grid: Grid,
    base: str,
    opts: list[tuple[str, str]],
    output: str,
    train_command: Sequence[str],
    *,
    num_gpus: int = 1,
    keep_going: bool = False,
    redo_changed: bool = False,
    dry_run: bool = False,
    max_parallel: int = 1,
    record: list[str] | None = None,
) -> int:
    """
    Check and plan every setting of `grid` on the config file `base` with the KEY VALUE `opts`
    of every setting, print the plan, then (unless `dry_run`) train what is not done into
    OUTPUT/<setting> with `train_command` (see plan_settings) and write the tables.
    Raises ValueError, before anything trains, for a bad key, value or changed setting.
    `record` (ablate.py's arguments) is saved in OUTPUT/sweep.json once the checks pass.
    Returns the number of settings that failed.
    """
    if max_parallel < 1:
        raise ValueError(f"--max-parallel {max_parallel}: give 1 or more settings at a time.")
    base = os.path.abspath(base)
    plan = plan_settings(base, opts, grid, output, train_command, num_gpus)
    handle_changed(plan, redo_changed, dry_run)
    print_plan(plan)
    if dry_run:
        return 0
    if record is not None:
        save_command(output, record)
    start = time.time()
    failures = train_all(plan, grid, base, output, keep_going, max_parallel)
    write_reports(plan, grid, base, output)
    done = sum(p.state == "done" for p in plan)
    print(
        f"{done} of {len(plan)} settings done ({failures} failed) after "
        f"{(time.time() - start) / 60:.1f} min; table: {os.path.join(output, 'results.md')}"
    )
    return failures
