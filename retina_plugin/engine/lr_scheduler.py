"""Detectron2's LR schedule, which also says when a resumed run changed its length.

Detectron2's ``LRMultiplier`` sets the LR at iteration i to
``BASE_LR * multiplier(i / SOLVER.MAX_ITER)`` and saves only i (``last_epoch``) and the base LRs.
On ``--resume`` the schedule is rebuilt from the new config, so a changed ``SOLVER.MAX_ITER``
changes the LR from the resumed iteration on: ``WarmupMultiStepLR``'s ``SOLVER.STEPS`` are
iterations and stay where they were, but ``WarmupCosineLR`` is stretched (or squeezed) over the
new length, so the LR jumps. Here the checkpoint also records ``MAX_ITER``, and a resume that
changes it logs a warning with the new LR multiplier.
"""

import logging

from detectron2.solver import LRMultiplier
from detectron2.solver import build_lr_scheduler as build_detectron2_lr_scheduler

__all__ = ["MaxIterRecordingLRMultiplier", "build_lr_scheduler"]

logger = logging.getLogger(__name__)


class MaxIterRecordingLRMultiplier(LRMultiplier):
    """``LRMultiplier`` whose state also holds its ``max_iter`` (plain ints and floats, so
    checkpoints still load with ``torch.load(weights_only=True)``)."""

    def state_dict(self):
        return {**super().state_dict(), "max_iter": self._max_iter}

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved_max_iter = state_dict.pop("max_iter", None)
        super().load_state_dict(state_dict)
        if saved_max_iter is not None and saved_max_iter != self._max_iter:
            multiplier = self._multiplier(self.last_epoch / self._max_iter)
            logger.warning(
                f"Resuming at iteration {self.last_epoch} with SOLVER.MAX_ITER = "
                f"{self._max_iter}; the checkpoint's run had {saved_max_iter}. The LR schedule is "
                f"now the one for {self._max_iter} iterations, at {multiplier:.4g} x BASE_LR here "
                "(WarmupMultiStepLR keeps its SOLVER.STEPS; WarmupCosineLR is stretched to the "
                "new length, so its LR jumps)."
            )


def build_lr_scheduler(cfg, optimizer) -> MaxIterRecordingLRMultiplier:
    """Detectron2's ``build_lr_scheduler(cfg, optimizer)``, recording ``SOLVER.MAX_ITER``."""
    scheduler = build_detectron2_lr_scheduler(cfg, optimizer)
    # Same multiplier (built by Detectron2 from cfg) on the same optimizer: the optimizer's
    # "initial_lr" is already set, so the base LRs are unchanged.
    return MaxIterRecordingLRMultiplier(optimizer, scheduler._multiplier, cfg.SOLVER.MAX_ITER)
