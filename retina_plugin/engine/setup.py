"""``setup(args)``: the config of a run from its command line, with logging and datasets."""

import logging
import os
from typing import Optional

import torch
import torch.distributed as dist
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..data import register_datasets_from_config
from ..evaluation import check_coco_eval_backend
from .device import check_process_group, device_written_in, resolve_device
from .output_lock import OutputDirInUse, lock_output_dir

__all__ = ["setup", "threads_per_worker"]

logger = logging.getLogger("retina_plugin")


def setup(args):
    """
    The frozen config of ``args.config_file`` with ``args.opts`` (KEY VALUE overrides) merged,
    read as plain YAML (no Python tags run); Detectron2's ``default_setup`` (logging, the config
    saved to OUTPUT_DIR, the seed); the datasets named in ``DATASETS.FOCAL_RETINA`` registered.

    ``MODEL.DEVICE`` is checked against the machine (:mod:`retina_plugin.engine.device`): where
    CUDA is not usable, Detectron2's default ``cuda`` becomes ``cpu`` with a warning for a run
    of one worker, and is refused otherwise (:class:`~retina_plugin.engine.device.CudaUnavailable`).
    Workers on one machine share its cores (``torch.set_num_threads``), GPU workers too.
    """
    cfg = load_config(args.config_file, args.opts)
    check_coco_eval_backend(cfg.TEST.FOCAL_RETINA.COCO_EVAL_BACKEND)
    configured_device, world_size = cfg.MODEL.DEVICE, comm.get_world_size()
    cfg.MODEL.DEVICE = resolve_device(
        configured_device,
        device_written_in(args.config_file, args.opts),
        world_size,
        f"WORLD_SIZE {world_size}",
    )
    check_process_group(cfg.MODEL.DEVICE)
    cfg.freeze()
    _lock_output_dir(cfg.OUTPUT_DIR)  # before anything is written there
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retina_plugin")
    if cfg.MODEL.DEVICE != configured_device:
        logger.warning("No CUDA device is available: training and testing on the CPU.")
    if comm.get_local_size() > 1:
        torch.set_num_threads(threads_per_worker(comm.get_local_size()))
    logger.info(
        "Worker %d of %d; on this machine %d of %d; %d torch threads; %s, %s",
        comm.get_rank(),
        world_size,
        comm.get_local_rank(),
        comm.get_local_size(),
        torch.get_num_threads(),
        cfg.MODEL.DEVICE,
        f"{dist.get_backend()} process group" if world_size > 1 else "one process",
    )
    register_datasets_from_config(cfg)
    return cfg


def threads_per_worker(local_size: int, cores: Optional[int] = None) -> int:
    """
    The torch threads of each of `local_size` workers on a machine of `cores` cores (default:
    ``os.cpu_count()``): an equal share, at least 1. Without a cap each worker takes every core
    for its intra-op threads, N workers oversubscribe the machine N times; GPU workers too, whose
    loss, matching and data copies run partly on the CPU (Detectron2's launch sets no cap).
    """
    cores = (os.cpu_count() or 1) if cores is None else cores
    return max(1, cores // local_size)


def _lock_output_dir(output_dir: str):
    """Worker 0 takes OUTPUT_DIR's lock (output_lock.py); if another run holds it, every worker
    stops here, before writing anything."""
    error = None
    if comm.get_rank() == 0:
        try:
            lock_output_dir(output_dir)
        except OutputDirInUse as in_use:
            error = str(in_use)
    if comm.get_world_size() > 1:
        error = comm.all_gather(error)[0]
    if error:
        raise OutputDirInUse(error)
