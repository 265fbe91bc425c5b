"""The config an analysis reads, as train_net.py reads it."""

import torch

from ..config import load_config
from ..data import register_datasets_from_config

__all__ = ["load_analysis_config"]


def load_analysis_config(config_file: str, opts=()):
    """
    The config of `config_file` with the KEY VALUE overrides `opts` (plain YAML, as train_net.py
    reads it), ``MODEL.DEVICE`` cuda made cpu where no GPU is available, and the datasets of
    ``DATASETS.FOCAL_RETINA`` registered.
    """
    cfg = load_config(config_file, opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    register_datasets_from_config(cfg)
    return cfg
