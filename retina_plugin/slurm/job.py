"""
What runs in every task of a SLURM job: one worker of a distributed training.

:class:`TrainingJob` is the callable submitit pickles and runs in each task (``srun``). A task
takes its rank, the world size and its local rank from SLURM's environment (submitit's
``JobEnvironment``), meets the other tasks on the job's first node (``MASTER_ADDR``, and a
``MASTER_PORT`` derived from the job id), and runs the ``main(args)`` of a train_net.py script
with that script's own arguments, as one worker: nothing is spawned.

Requeueing (submitit's checkpoint protocol). SLURM sends SIGUSR2 to every task ``--signal-delay``
seconds before the time limit (and a cluster may send it on preemption). The trainer's preemption
hook (:mod:`retina_plugin.engine.preemption`) catches it: all workers stop at one iteration and
worker 0 saves that exact iteration. Worker 0 then hands over to submitit's SIGUSR2 handler,
which calls :meth:`TrainingJob.checkpoint` (the same job, with ``--resume``), saves it in place of
the submitted one and runs ``scontrol requeue``: the job runs again under the same id, resumes
from the saved iteration into the same OUTPUT_DIR, and this can repeat (``--max-timeouts``).
A job stopped by SIGTERM (``scancel``, or a preemption that SLURM requeues itself) saves the same
way and exits with status 75 without requeueing. A job that fails is not requeued.

Every run of the job trains with ``--resume``: the first one starts from MODEL.WEIGHTS when
OUTPUT_DIR holds no checkpoint, and a run requeued by SLURM itself continues from the last one.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import sys

from detectron2.engine import default_argument_parser

from ..engine.launch import WorkerEnvironment, join_process_group, run_device
from ..engine.preemption import PREEMPTED_EXIT_CODE, TrainingPreempted

__all__ = ["TrainingJob", "worker_environment", "with_resume", "load_main"]

logger = logging.getLogger("retina_plugin")


def with_resume(argv: list[str]) -> list[str]:
    """train_net.py's arguments with ``--resume`` (put before the KEY VALUE pairs)."""
    return list(argv) if "--resume" in argv else ["--resume", *argv]


def load_main(script: str):
    """The ``main(args)`` function of a train_net.py-like script (run without its
    ``if __name__ == "__main__"`` block, so a copy with its own Trainer subclass works too)."""
    namespace = runpy.run_path(script, run_name="retina_plugin_slurm_job")
    main = namespace.get("main")
    if not callable(main):
        raise ValueError(
            f"{script} defines no main(args) function to run in each task: give a copy of "
            "train_net.py (--train-script)."
        )
    return main


def worker_environment() -> WorkerEnvironment:
    """This task's place in the run, from SLURM's environment; exports ``MASTER_ADDR`` (the
    job's first node) and ``MASTER_PORT`` for the rendezvous."""
    import submitit  # noqa: PLC0415  (optional dependency)

    job = submitit.JobEnvironment()
    # CUDA_VISIBLE_DEVICES is left alone: each worker takes the GPU of its local rank.
    submitit.helpers.TorchDistributedEnvironment().export(
        set_cuda_visible_devices=False, overwrite=True
    )
    if job.num_tasks % job.num_nodes:
        raise ValueError(
            f"SLURM started {job.num_tasks} tasks on {job.num_nodes} nodes: every node must run "
            "the same number of workers (sbatch --ntasks-per-node)."
        )
    return WorkerEnvironment(
        rank=job.global_rank,
        world_size=job.num_tasks,
        local_rank=job.local_rank,
        local_world_size=job.num_tasks // job.num_nodes,
        group_rank=job.node,
    )


def _flush_logs():
    for name in [None, *logging.Logger.manager.loggerDict]:
        for handler in getattr(logging.getLogger(name), "handlers", []):
            handler.flush()


def _requeue_signal() -> signal.Signals:
    import submitit  # noqa: PLC0415

    return submitit.JobEnvironment._usr_sig()  # SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says


class TrainingJob:
    """One distributed training, run by every task of a SLURM job (see the module docstring).

    Args:
        script: path of train_net.py (or a copy of it) whose ``main(args)`` every task runs.
        argv: its arguments (``--config-file ... KEY VALUE ...``) without ``--num-gpus``;
            ``--resume`` is added.
    """

    def __init__(self, script: str, argv: list[str]):
        self.script = os.path.abspath(script)
        self.argv = with_resume(argv)

    def __call__(self):
        # submitit's handler of the requeue signal is in place: let a signal that came while
        # the task started (blocked by start_task.py) reach it now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [_requeue_signal()])
        args = default_argument_parser().parse_args(self.argv)
        if args.num_gpus != 1 or args.num_machines != 1:
            raise ValueError(
                "--num-gpus/--num-machines in a SLURM job: each task is one worker; ask for "
                "--gpus-per-node and --nodes when submitting instead."
            )
        main = load_main(self.script)
        env = worker_environment()
        # A CPU run (MODEL.DEVICE cpu) joins with gloo, also on GPU nodes.
        device = run_device(args, env.world_size, f"the job's {env.world_size} tasks")
        join_process_group(env, launcher="slurm", device=device)
        try:
            return main(args)
        except TrainingPreempted as preempted:
            if not preempted.logged:
                logger.warning("Preempted: %s", preempted)
            self._requeue_or_exit(env, preempted)

    def checkpoint(self, *args, **kwargs):
        """submitit's checkpoint protocol: what the requeued job runs (this job, resuming)."""
        import submitit  # noqa: PLC0415

        return submitit.helpers.DelayedSubmission(TrainingJob(self.script, self.argv))

    @staticmethod
    def _requeue_or_exit(env: WorkerEnvironment, preempted: TrainingPreempted):
        """Worker 0, stopped by the requeue signal: submitit's handler of that signal checkpoints
        and requeues the job (and exits). Anything else: exit with PREEMPTED_EXIT_CODE."""
        signum = _requeue_signal()
        handler = signal.getsignal(signum)
        if env.rank == 0 and preempted.signal_name == signum.name and callable(handler):
            logger.warning("Requeueing the job (submitit, %s): it resumes from that checkpoint.",
                           signum.name)  # fmt: skip
            _flush_logs()  # before scontrol stops this job
            handler(signum, None)  # submitit's checkpoint_and_try_requeue: exits
        sys.exit(PREEMPTED_EXIT_CODE)
