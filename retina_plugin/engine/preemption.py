"""
Preemption: a scheduler's signal saves the exact iteration, and the run exits with a status of
its own.

Schedulers send SIGTERM (SLURM also SIGUSR1/SIGUSR2 when asked) some time before they kill a
job. On one of ``SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS``, every worker finishes its current
iteration; after each iteration the workers agree through one all-reduce whether any of them was
signalled, so all stop at the same iteration and none is left waiting in a collective. Worker 0
then writes an atomic checkpoint of that iteration (model, optimizer, scheduler, grad scaler,
iteration and the data stream's seed: see :mod:`retina_plugin.data.stream`) and points
``last_checkpoint`` at it; no evaluation runs, and the processes exit with
:data:`PREEMPTED_EXIT_CODE`. ``--resume`` continues from there.

A signal that arrives before the first iteration is handled after it; one that arrives during the
final evaluation stops the evaluation (training has finished and ``model_final.pth`` is written;
``--resume`` evaluates it).
"""

import logging
import signal
import threading

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["PREEMPTED_EXIT_CODE", "PreemptionHook", "TrainingPreempted", "check_signal_names"]

logger = logging.getLogger("retina_plugin")

# EX_TEMPFAIL of sysexits.h: "try again later". Distinct from 0 (done) and 1 (failed).
PREEMPTED_EXIT_CODE = 75
_SIGNAL_NAMES = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")


class TrainingPreempted(Exception):
    """Training stopped on a preemption signal; its state is saved (see the module docstring)."""

    logged = False  # whether the worker has logged it
    signal_name = None  # the signal this worker received ("SIGUSR2"), None if another one did


def check_signal_names(names) -> list[signal.Signals]:
    """The signals named by ``SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS``; ValueError for others."""
    unknown = [name for name in names if name not in _SIGNAL_NAMES]
    if unknown:
        raise ValueError(
            f"SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS = {list(names)} names {unknown}; use names "
            f"from {_SIGNAL_NAMES} (or an empty list to keep the signals' default actions)."
        )
    return [signal.Signals[name] for name in names]


class _HidePreemptionTraceback(logging.Filter):
    """Detectron2's loop logs every exception that ends training as an error with its traceback;
    a preemption is not an error (the launcher logs it as a warning)."""

    def filter(self, record):
        return not (record.exc_info and isinstance(record.exc_info[1], TrainingPreempted))


_TRAIN_LOOP_LOGGER = logging.getLogger("detectron2.engine.train_loop")
_TRAIN_LOOP_LOGGER.addFilter(_HidePreemptionTraceback())


class PreemptionHook(HookBase):
    """See the module docstring. Installs its signal handlers when created (in the main thread)
    and restores the previous ones after training."""

    def __init__(self, signal_names):
        self._signals = check_signal_names(signal_names)
        self._received = None  # name of the first signal
        self._training_done = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if self._received is None:
            self._received = name
            # The logging module is not reentrant: the message waits for after_step.
        if self._training_done:
            preempted = TrainingPreempted(
                f"{name} during the final evaluation: training had finished and its weights "
                "are saved; the evaluation was stopped (run again with --resume to evaluate)."
            )
            preempted.signal_name = name
            raise preempted

    def after_step(self):
        trainer = self.trainer
        if _any_worker(self._received is not None):
            checkpointer = trainer.checkpointer
            name = f"model_{trainer.iter:07d}"
            checkpointer.save(name, iteration=trainer.iter)  # worker 0 writes it
            comm.synchronize()  # no worker leaves before the checkpoint is whole
            preempted = TrainingPreempted(
                f"{self._received or 'a signal to another worker'} at iteration {trainer.iter}: "
                f"saved {name}.pth in {checkpointer.save_dir} (last_checkpoint points at it); "
                "no evaluation. Run again with --resume to continue this run exactly."
            )
            logger.warning("Preempted: %s", preempted)
            preempted.logged = True
            preempted.signal_name = self._received
            # Every worker has said so before any exits: a launcher stops the others when one
            # exits.
            comm.synchronize()
            raise preempted
        if trainer.iter + 1 >= trainer.max_iter:
            self._training_done = True

    def after_train(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _any_worker(flag: bool) -> bool:
    """Whether `flag` is set on any worker (one all-reduce when there are several)."""
    if comm.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
