"""
Which COCO evaluation code computes the bbox AP (``TEST.FOCAL_RETINA.COCO_EVAL_BACKEND``), inside
Detectron2's own ``COCOEvaluator``.

Detectron2's ``COCOEvaluator`` evaluates with its C++ ``COCOeval_opt`` when ``detectron2._C`` is
built, else (a pip-installed, Python-only Detectron2) with pycocotools' pure-Python ``COCOeval``,
several times slower. ``faster-coco-eval`` (PyPI, compiled wheels; it grew out of Detectron2's
``COCOeval_opt``) computes the same statistics at C++ speed. Backends:

- ``auto``: Detectron2's C++ evaluator if built, else faster-coco-eval if installed, else
  pycocotools;
- ``detectron2``: whatever Detectron2 chooses (its C++ evaluator, or pycocotools without it);
- ``faster_coco_eval``: faster-coco-eval (an error if it is not installed);
- ``pycocotools``: pycocotools' ``COCOeval``, the reference.

:class:`COCOEvaluatorWithBackend` is Detectron2's ``COCOEvaluator``: the same results dict, the
same printed tables (``_derive_coco_results``), the same ``coco_instances_results.json``; only the
``cocoeval_fn`` given to Detectron2's ``_evaluate_predictions_on_coco`` differs.
"""

import functools
import logging

from detectron2.evaluation import COCOEvaluator, coco_evaluation

__all__ = [
    "COCO_EVAL_BACKENDS",
    "COCOEvaluatorWithBackend",
    "build_coco_evaluator",
    "check_coco_eval_backend",
    "resolve_coco_eval_backend",
]

COCO_EVAL_BACKENDS = ("auto", "detectron2", "faster_coco_eval", "pycocotools")
_KEY = "TEST.FOCAL_RETINA.COCO_EVAL_BACKEND"


def _detectron2_fast_eval_is_built() -> bool:
    # Detectron2 binds COCOeval_opt to pycocotools' COCOeval when its C++ extension is missing.
    return coco_evaluation.COCOeval_opt is not coco_evaluation.COCOeval


def _faster_coco_eval_is_installed() -> bool:
    try:
        import faster_coco_eval  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def check_coco_eval_backend(backend: str) -> str:
    """`backend` if it names a backend that can run here; ValueError naming the key otherwise."""
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(
            f"{_KEY} = {backend!r} is not a COCO evaluation backend: choose one of "
            f"{', '.join(COCO_EVAL_BACKENDS)}."
        )
    if backend == "faster_coco_eval" and not _faster_coco_eval_is_installed():
        raise ValueError(
            f"{_KEY} = faster_coco_eval, but faster-coco-eval is not installed: "
            "pip install faster-coco-eval (or choose auto, detectron2 or pycocotools)."
        )
    return backend


def resolve_coco_eval_backend(backend: str) -> str:
    """The backend that `backend` (checked) means here: ``auto`` resolved, ``detectron2``
    without Detectron2's C++ extension is ``pycocotools`` (what Detectron2 falls back to)."""
    backend = check_coco_eval_backend(backend)
    if backend == "auto":
        if _detectron2_fast_eval_is_built():
            return "detectron2"
        return "faster_coco_eval" if _faster_coco_eval_is_installed() else "pycocotools"
    if backend == "detectron2" and not _detectron2_fast_eval_is_built():
        return "pycocotools"
    return backend


class _DropMessage(logging.Filter):
    def __init__(self, message: str):
        super().__init__()
        self.message = message

    def filter(self, record):
        return record.getMessage() != self.message


_NO_ANNOTATIONS = "Annotations are not available for evaluation."


class COCOEvaluatorWithBackend(COCOEvaluator):
    """
    Detectron2's ``COCOEvaluator`` whose COCO statistics come from `backend` (see the module
    docstring; resolved with :func:`resolve_coco_eval_backend`). Other arguments are
    ``COCOEvaluator``'s.
    """

    def __init__(self, dataset_name, *args, backend: str = "auto", **kwargs):
        self.backend = resolve_coco_eval_backend(backend)
        kwargs["use_fast_impl"] = self.backend == "detectron2"
        super().__init__(dataset_name, *args, **kwargs)

    def _eval_predictions(self, predictions, img_ids=None):
        if self.backend != "faster_coco_eval":
            return super()._eval_predictions(predictions, img_ids)
        # Detectron2's preparation (category ids mapped back to the dataset's, in place, and
        # coco_instances_results.json written), then its evaluation with faster-coco-eval.
        do_evaluation, self._do_evaluation = self._do_evaluation, False
        drop = _DropMessage(_NO_ANNOTATIONS)
        self._logger.addFilter(drop)
        try:
            super()._eval_predictions(predictions, img_ids)
        finally:
            self._do_evaluation = do_evaluation
            self._logger.removeFilter(drop)
        if not do_evaluation:
            self._logger.info(_NO_ANNOTATIONS)
            return
        from faster_coco_eval import COCOeval_faster  # noqa: PLC0415

        coco_results = [x for p in predictions for x in p["instances"]]
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        self._logger.info("Evaluating predictions with faster-coco-eval ...")
        for task in sorted(tasks):
            coco_eval = (
                coco_evaluation._evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    cocoeval_fn=functools.partial(COCOeval_faster, print_function=print),
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if coco_results  # as Detectron2: no statistics (NaN) for no detections
                else None
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )


def build_coco_evaluator(cfg, dataset_name: str, output_dir=None) -> COCOEvaluatorWithBackend:
    """The bbox COCOEvaluator of `dataset_name` with ``TEST.FOCAL_RETINA.COCO_EVAL_BACKEND``."""
    return COCOEvaluatorWithBackend(
        dataset_name,
        tasks=("bbox",),
        output_dir=output_dir,
        backend=cfg.TEST.FOCAL_RETINA.COCO_EVAL_BACKEND,
    )
