"""Detectron2's DefaultPredictor, reading its weights as weights only."""

from detectron2.engine import DefaultPredictor

from .checkpoint import SafeCheckpointer

__all__ = ["SafePredictor"]


class SafePredictor(DefaultPredictor):
    """
    ``DefaultPredictor(cfg)`` (one image in, the model's outputs for it out) whose
    ``MODEL.WEIGHTS`` are read by :class:`SafeCheckpointer`, so a checkpoint that would run code
    when unpickled is refused (:class:`UnsafeCheckpointError`) instead of loaded.
    """

    def __init__(self, cfg):
        no_weights = cfg.clone()
        no_weights.defrost()
        no_weights.MODEL.WEIGHTS = ""  # DefaultPredictor's own checkpointer then loads nothing
        super().__init__(no_weights)
        self.cfg = cfg.clone()
        SafeCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
