"""
Starts the Python of one SLURM task with the requeue signal blocked (submitit's ``python``).

SLURM may send ``--signal`` up to a minute before the time it was asked for (its time-limit check
runs every 30 s), so with a short limit, or on preemption, the signal can reach a task while its
Python is still starting: before submitit has loaded the job (which imports torch and Detectron2,
seconds) and installed its handler, the signal's default action would kill the task and SLURM
would mark the job FAILED instead of requeueing it. Run as ``python -I -S start_task.py SIGNAME
ARGS...``, this script blocks SIGNAME and executes ``python ARGS...``: the blocked mask and a
signal still pending survive the exec, and :class:`retina_plugin.slurm.job.TrainingJob` unblocks
the signal once submitit's handler is in place, which then handles a pending one at once.

A file run by path with ``-I -S`` (no site-packages, no imports of this package): it takes a few
milliseconds, the only time left in which the signal ends the task.
"""

import os
import signal
import sys


def main(argv):
    signum = signal.Signals[argv[1]]
    signal.pthread_sigmask(signal.SIG_BLOCK, [signum])
    os.execv(sys.executable, [sys.executable, *argv[2:]])


if __name__ == "__main__":
    main(sys.argv)
