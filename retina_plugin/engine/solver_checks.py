"""Range checks of the ``SOLVER.*`` keys, run when the trainer is built.

Detectron2 reads these keys as they come: a zero or negative LR trains nothing, a batch that the
workers cannot share stops in an ``assert`` deep in the data loader, a ``CHECKPOINT_PERIOD`` of 0
divides by zero after the first step, and ``SOLVER.STEPS`` out of order fail inside fvcore. Here
each raises ``ValueError`` naming the key, its value and what is allowed, before the model is
built.
"""

import logging
import math

from ..checks import check_at_least, check_in_range
from .optimizer import OPTIMIZERS
from .preemption import check_signal_names

__all__ = ["check_solver_config"]

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")
WARMUP_METHODS = ("linear", "constant")
CLIP_TYPES = ("value", "norm")


def check_solver_config(cfg, world_size: int = 1):
    """Check ``cfg.SOLVER`` (and ``TEST.EVAL_PERIOD``) for a run of `world_size` workers."""
    solver = cfg.SOLVER
    _check_one_of("SOLVER.FOCAL_RETINA.OPTIMIZER", solver.FOCAL_RETINA.OPTIMIZER, OPTIMIZERS)
    _check_positive("SOLVER.BASE_LR", solver.BASE_LR)
    check_at_least("SOLVER.WEIGHT_DECAY", solver.WEIGHT_DECAY, 0)
    check_at_least("SOLVER.WEIGHT_DECAY_NORM", solver.WEIGHT_DECAY_NORM, 0)
    if solver.WEIGHT_DECAY_BIAS is not None:
        check_at_least("SOLVER.WEIGHT_DECAY_BIAS", solver.WEIGHT_DECAY_BIAS, 0)
    check_at_least("SOLVER.BIAS_LR_FACTOR", solver.BIAS_LR_FACTOR, 0)
    if solver.FOCAL_RETINA.OPTIMIZER == "SGD":  # AdamW has no momentum key
        check_in_range("SOLVER.MOMENTUM", solver.MOMENTUM, 0, 1, high_open=True)
    _check_batch(solver, world_size)
    _check_schedule(solver)
    _check_clipping(solver.CLIP_GRADIENTS)
    _check_at_least_int("SOLVER.CHECKPOINT_PERIOD", solver.CHECKPOINT_PERIOD, 1)
    _check_at_least_int("SOLVER.FOCAL_RETINA.LOG_PERIOD", solver.FOCAL_RETINA.LOG_PERIOD, 1)
    check_signal_names(solver.FOCAL_RETINA.PREEMPTION_SIGNALS)
    _check_at_least_int("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, 0)


def _check_batch(solver, world_size: int):
    _check_at_least_int("SOLVER.IMS_PER_BATCH", solver.IMS_PER_BATCH, 1)
    _check_at_least_int("SOLVER.REFERENCE_WORLD_SIZE", solver.REFERENCE_WORLD_SIZE, 0)
    reference = solver.REFERENCE_WORLD_SIZE
    if reference and solver.IMS_PER_BATCH % reference:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH = {solver.IMS_PER_BATCH} must be divisible by "
            f"SOLVER.REFERENCE_WORLD_SIZE = {reference} (the batch is rescaled per worker)."
        )
    if not reference and solver.IMS_PER_BATCH % world_size:
        lower = solver.IMS_PER_BATCH // world_size * world_size
        choices = " or ".join(str(n) for n in (lower, lower + world_size) if n > 0)
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH = {solver.IMS_PER_BATCH} is the batch of all {world_size} "
            f"workers together, so it must be divisible by {world_size} (--num-gpus x "
            f"--num-machines): use {choices}."
        )


def _check_schedule(solver):
    _check_at_least_int("SOLVER.MAX_ITER", solver.MAX_ITER, 1)
    _check_one_of("SOLVER.LR_SCHEDULER_NAME", solver.LR_SCHEDULER_NAME, LR_SCHEDULERS)
    _check_at_least_int("SOLVER.WARMUP_ITERS", solver.WARMUP_ITERS, 0)
    check_in_range("SOLVER.WARMUP_FACTOR", solver.WARMUP_FACTOR, 0, 1)
    _check_one_of("SOLVER.WARMUP_METHOD", solver.WARMUP_METHOD, WARMUP_METHODS)
    if solver.LR_SCHEDULER_NAME == "WarmupCosineLR":
        check_in_range("SOLVER.BASE_LR_END", solver.BASE_LR_END, 0, solver.BASE_LR)
    else:
        _check_positive("SOLVER.GAMMA", solver.GAMMA)
    if solver.LR_SCHEDULER_NAME == "WarmupStepWithFixedGammaLR":
        _check_at_least_int("SOLVER.NUM_DECAYS", solver.NUM_DECAYS, 1)
    if solver.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        _check_steps(tuple(solver.STEPS), solver.MAX_ITER)


def _check_steps(steps: tuple, max_iter: int):
    if any(not isinstance(s, int) or s < 1 for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(
            f"SOLVER.STEPS = {steps} must be increasing iteration numbers >= 1, e.g. (60000, "
            "80000): the LR is multiplied by SOLVER.GAMMA at each."
        )
    late = [s for s in steps if s >= max_iter]
    if late:
        # A warning, not an error: configs keep their schedule when a short run overrides
        # SOLVER.MAX_ITER (smoke tests, benchmarks); Detectron2 drops these steps too.
        logger.warning(
            f"SOLVER.STEPS = {steps}: {', '.join(map(str, late))} not below SOLVER.MAX_ITER = "
            f"{max_iter}, so the LR never drops there."
        )


def _check_clipping(clip):
    if not clip.ENABLED:
        return
    _check_one_of("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip.CLIP_TYPE, CLIP_TYPES)
    _check_positive("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip.CLIP_VALUE)
    if clip.CLIP_TYPE == "norm" and not clip.NORM_TYPE > 0:  # inf: the max-norm
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.NORM_TYPE = {clip.NORM_TYPE} is out of range: it must be > 0 "
            "(2.0: the Euclidean norm, inf: the largest absolute value)."
        )


def _check_positive(key: str, value):
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} = {value} is out of range: it must be finite and > 0.")


def _check_at_least_int(key: str, value, low: int):
    if not isinstance(value, int) or value < low:
        raise ValueError(f"{key} = {value!r} is out of range: it must be an integer >= {low}.")


def _check_one_of(key: str, value, allowed: tuple):
    if value not in allowed:
        raise ValueError(f"{key} = {value!r} is not one of {allowed}.")
