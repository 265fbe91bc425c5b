"""
Starting the workers of a run: Detectron2's ``launch`` (``--num-gpus``, ``--num-machines``,
``--machine-rank``, ``--dist-url``), or, when the process was started by ``torchrun``, the
process group that torchrun's environment describes.

Under torchrun each process is one worker: torchrun has already started them all, so nothing is
spawned here. The process group is initialised from its environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), Detectron2's
local process group is created (so ``comm.get_local_rank()`` / ``get_local_size()`` are right),
and a GPU worker takes the device of its local rank, as Detectron2's own workers do.

Before any worker starts, the run's device is checked (:mod:`retina_plugin.engine.device`):
``--num-gpus N`` or ``MODEL.DEVICE cuda`` where CUDA is not usable is refused. Workers of a CPU
run (``MODEL.DEVICE cpu``) meet with gloo: Detectron2's ``launch`` picks NCCL wherever it sees a
GPU, so the workers it spawns for a CPU run are started with no GPU visible.
"""

import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

from ..config import load_config
from .device import (
    check_gpus_per_machine,
    device_written_in,
    process_group_backend,
    resolve_device,
)
from .preemption import PREEMPTED_EXIT_CODE, TrainingPreempted

__all__ = [
    "WorkerEnvironment",
    "torchrun_environment",
    "join_process_group",
    "launch",
    "run_device",
]

logger = logging.getLogger("retina_plugin")
# Forwarded by a launching process to the workers it spawned (each worker decides, by
# SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS, what they mean).
_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


@dataclass(frozen=True)
class WorkerEnvironment:
    """A worker's place in a run started by a launcher (torchrun, or SLURM's srun through
    :mod:`retina_plugin.slurm`). The rendezvous address comes from ``MASTER_ADDR`` and
    ``MASTER_PORT`` in the environment."""

    rank: int  # global rank, 0 .. world_size - 1
    world_size: int
    local_rank: int  # rank on this machine (node)
    local_world_size: int  # workers on this machine
    group_rank: int  # rank of this machine


def torchrun_environment(environ=None) -> Optional[WorkerEnvironment]:
    """
    The torchrun environment of this process, or None when torchrun did not start it (torchrun
    sets ``TORCHELASTIC_RUN_ID`` and the variables above). Raises ValueError when the variables
    are incomplete or describe machines with different numbers of workers, which Detectron2's
    local process groups cannot represent.
    """
    environ = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" not in environ:
        return None
    missing = [name for name in _TORCHRUN_VARIABLES if name not in environ]
    if missing:
        raise ValueError(
            f"This process was started by torchrun (TORCHELASTIC_RUN_ID is set) but {missing} "
            "are not in its environment; start it with torchrun >= 1.10 or without torchrun."
        )
    env = WorkerEnvironment(
        rank=int(environ["RANK"]),
        world_size=int(environ["WORLD_SIZE"]),
        local_rank=int(environ["LOCAL_RANK"]),
        local_world_size=int(environ["LOCAL_WORLD_SIZE"]),
        group_rank=int(environ["GROUP_RANK"]),
    )
    expected_rank = env.group_rank * env.local_world_size + env.local_rank
    if env.world_size % env.local_world_size or env.rank != expected_rank:
        raise ValueError(
            f"torchrun gave this worker RANK={env.rank}, WORLD_SIZE={env.world_size}, "
            f"GROUP_RANK={env.group_rank}, LOCAL_RANK={env.local_rank}, "
            f"LOCAL_WORLD_SIZE={env.local_world_size}: every machine must run the same number of "
            "workers (the same --nproc-per-node on every node)."
        )
    return env


def launch(main_func: Callable, args, timeout=DEFAULT_TIMEOUT):
    """
    Run ``main_func(args)`` in every worker of the run described by ``args`` (Detectron2's
    ``default_argument_parser()``): under torchrun in this process, as one worker of torchrun's
    process group; otherwise through Detectron2's ``launch``, which spawns ``args.num_gpus``
    workers on this machine (GPU workers with NCCL; CPU workers, ``MODEL.DEVICE cpu``, with gloo).

    Raises :class:`~retina_plugin.engine.device.CudaUnavailable` before any worker starts when
    the run asks for GPUs where CUDA is not usable (see :mod:`retina_plugin.engine.device`).

    A run stopped by a preemption signal (:mod:`retina_plugin.engine.preemption`) exits with
    status ``PREEMPTED_EXIT_CODE`` (75); a process that spawned workers forwards SIGTERM, SIGUSR1
    and SIGUSR2 to them.
    """
    worker = functools.partial(_exit_when_preempted, main_func)
    env = torchrun_environment()
    if env is None:
        num_workers = args.num_gpus * args.num_machines
        device = run_device(args, num_workers, _workers_flags(args))
        if device.startswith("cuda"):
            check_gpus_per_machine(args.num_gpus, torch.cuda.device_count())
        with contextlib.ExitStack() as stack:
            if args.num_gpus > 1:
                stack.enter_context(_signals_forwarded_to_workers())
            if num_workers > 1 and process_group_backend(device) == "gloo":
                stack.enter_context(_gpus_hidden())
            try:
                return detectron2_launch(
                    worker,
                    args.num_gpus,
                    num_machines=args.num_machines,
                    machine_rank=args.machine_rank,
                    dist_url=args.dist_url,
                    args=(args,),
                    timeout=timeout,
                )
            except ProcessExitedException as error:
                if error.exit_code != PREEMPTED_EXIT_CODE:
                    raise
                sys.exit(PREEMPTED_EXIT_CODE)  # the workers logged what was saved
    if args.num_gpus != 1 or args.num_machines != 1:
        raise ValueError(
            f"--num-gpus {args.num_gpus} --num-machines {args.num_machines} under torchrun: "
            "torchrun starts the workers itself, one process each. Leave both at 1 and give "
            "torchrun --nproc-per-node N (and --nnodes M) instead."
        )
    device = run_device(args, env.world_size, f"torchrun's WORLD_SIZE {env.world_size}")
    join_process_group(env, timeout, device=device)
    return worker(args)


def run_device(args, num_workers: int, workers: str) -> str:
    """The device of the run of `args` (:func:`~retina_plugin.engine.device.resolve_device`)."""
    cfg = load_config(args.config_file, args.opts)
    written_in = device_written_in(args.config_file, args.opts)
    return resolve_device(cfg.MODEL.DEVICE, written_in, num_workers, workers)


def _workers_flags(args) -> str:
    flags = f"--num-gpus {args.num_gpus}"
    return flags + (f" --num-machines {args.num_machines}" if args.num_machines > 1 else "")


@contextlib.contextmanager
def _gpus_hidden():
    """Workers spawned in this context see no GPU (CUDA_VISIBLE_DEVICES empty): Detectron2's
    launch then gives CPU workers gloo, and no GPU or CUDA context each."""
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if previous is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous


def _exit_when_preempted(main_func: Callable, args):
    try:
        return main_func(args)
    except TrainingPreempted as preempted:
        if not preempted.logged:
            logger.warning("Preempted: %s", preempted)
        sys.exit(PREEMPTED_EXIT_CODE)


@contextlib.contextmanager
def _signals_forwarded_to_workers():
    """SIGTERM, SIGUSR1 and SIGUSR2 forwarded to the spawned workers; the previous handlers
    afterwards."""

    def forward(signum, frame):
        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def join_process_group(
    env: WorkerEnvironment, timeout=DEFAULT_TIMEOUT, launcher="torchrun", device=None
):
    """What Detectron2's ``_distributed_worker`` does for a worker it spawned, for a worker that
    `launcher` started: the process group (``env://``: ``MASTER_ADDR``, ``MASTER_PORT``), the
    local group, the device of the local rank. `device` is the run's ``MODEL.DEVICE``: ``cpu``
    joins with gloo and takes no GPU; None takes a GPU (NCCL) where there is one, as Detectron2's
    ``launch``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device.startswith("cuda")
    if on_gpu and env.local_rank >= torch.cuda.device_count():
        hint = {
            "torchrun": "use --nproc-per-node <= the number of GPUs",
            "slurm": "ask for as many tasks per node as GPUs per node",
        }[launcher]
        raise RuntimeError(
            f"{launcher} started {env.local_world_size} workers on this machine but it has "
            f"{torch.cuda.device_count()} GPU(s): {hint}."
        )
    if env.world_size > 1:
        dist.init_process_group(
            backend=process_group_backend(device),
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout,
        )
        comm.create_local_process_group(env.local_world_size)
    if on_gpu:
        torch.cuda.set_device(env.local_rank)
    comm.synchronize()
