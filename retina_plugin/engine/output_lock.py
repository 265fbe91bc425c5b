"""
One run per OUTPUT_DIR: an advisory lock that a second run on the same folder finds held.

Two trainings on one OUTPUT_DIR (a second terminal, a job submitted twice) would overwrite each
other's checkpoints, ``last_checkpoint`` and ``metrics.json``. The first worker (global rank 0)
of every ``train_net.py`` run, ``--eval-only`` included (it would overwrite ``config.yaml``,
``final_results.json`` and ``inference/``), takes an exclusive ``fcntl.flock`` on
``OUTPUT_DIR/.retina_plugin.lock`` before anything is written there, and writes its pid, host,
start time and command into that file. A run that finds the lock held stops, on every worker,
with :class:`OutputDirInUse` naming the folder and the other run. The operating system releases
the lock when the holding process ends, however it ends, so a crashed or killed run never leaves
it held and ``--resume`` works at once. Within one process the lock is taken once per folder (a
test, or a notebook, running several trainings in turn).

On file systems without ``flock`` (some network file systems) the lock cannot be taken; the run
then logs a warning and goes on unprotected.
"""

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys

__all__ = ["LOCK_FILE", "OutputDirInUse", "lock_output_dir", "release_output_dir"]

logger = logging.getLogger("retina_plugin")

LOCK_FILE = ".retina_plugin.lock"
_held = {}  # real path of OUTPUT_DIR -> the open lock file of this process


class OutputDirInUse(RuntimeError):
    """Another run holds OUTPUT_DIR's lock."""


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        return (
            f"pid {info['pid']} on {info['host']}, started {info['started']}: "
            f"{' '.join(info['command'])}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not written its details yet"


def lock_output_dir(output_dir: str) -> None:
    """Take `output_dir`'s lock for the rest of this process, or raise :class:`OutputDirInUse`
    naming the run that holds it. Creates `output_dir` if needed (nothing else is written)."""
    real = os.path.realpath(output_dir)
    if real in _held:
        return
    os.makedirs(real, exist_ok=True)
    path = os.path.join(real, LOCK_FILE)
    lock = open(path, "a+")  # noqa: SIM115  (held open for the life of the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock.close()
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputDirInUse(
                f"OUTPUT_DIR {real} is in use by another run ({_holder(path)}): two runs would "
                "overwrite each other's checkpoints and results. Wait for it to end or stop it "
                "(then --resume continues from its last checkpoint), or choose another "
                "OUTPUT_DIR."
            ) from None
        logger.warning("Could not lock OUTPUT_DIR %s (%s): a second run on it would not be "
                       "refused.", real, error)  # fmt: skip
        return
    lock.seek(0)
    lock.truncate()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
               "command": [sys.executable, *sys.argv]}, lock)  # fmt: skip
    lock.flush()
    _held[real] = lock


def release_output_dir(output_dir: str) -> None:
    """Give up this process's lock on `output_dir` (if held): for a process that goes on after
    its run, e.g. a test running trainings in turn."""
    lock = _held.pop(os.path.realpath(output_dir), None)
    if lock is not None:
        lock.close()  # closing the file releases the flock
