"""``setup(args)``: the config of a run from its command line, with logging and datasets."""

import logging
import os

import torch
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..data import register_datasets_from_config
from ..evaluation import check_coco_eval_backend
from .output_lock import OutputDirInUse, lock_output_dir

__all__ = ["setup"]

logger = logging.getLogger("retina_plugin")


def setup(args):
    """
    The frozen config of ``args.config_file`` with ``args.opts`` (KEY VALUE overrides) merged,
    read as plain YAML (no Python tags run); Detectron2's ``default_setup`` (logging, the config
    saved to OUTPUT_DIR, the seed); the datasets named in ``DATASETS.FOCAL_RETINA`` registered.

    Without a GPU, ``MODEL.DEVICE cuda`` becomes ``cpu`` with a warning; processes on one
    machine share its cores on the CPU.
    """
    cfg = load_config(args.config_file, args.opts)
    check_coco_eval_backend(cfg.TEST.FOCAL_RETINA.COCO_EVAL_BACKEND)
    fell_back_to_cpu = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if fell_back_to_cpu:
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    _lock_output_dir(cfg.OUTPUT_DIR)  # before anything is written there
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retina_plugin")
    if fell_back_to_cpu:
        logger.warning("No CUDA device is available: training and testing on the CPU.")
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        # Processes on one machine share its cores rather than each using all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    logger.info(
        "Worker %d of %d; on this machine %d of %d; %d torch threads",
        comm.get_rank(),
        comm.get_world_size(),
        comm.get_local_rank(),
        comm.get_local_size(),
        torch.get_num_threads(),
    )
    register_datasets_from_config(cfg)
    return cfg


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
