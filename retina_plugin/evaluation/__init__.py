"""Evaluation: Detectron2's COCOEvaluator with a choice of COCO statistics backend."""

from .coco_backend import (
    COCO_EVAL_BACKENDS,
    COCOEvaluatorWithBackend,
    build_coco_evaluator,
    check_coco_eval_backend,
    resolve_coco_eval_backend,
)

__all__ = [
    "COCO_EVAL_BACKENDS",
    "COCOEvaluatorWithBackend",
    "build_coco_evaluator",
    "check_coco_eval_backend",
    "resolve_coco_eval_backend",
]
