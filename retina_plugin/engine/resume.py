"""What ``--resume`` may change, and the errors for what it may not.

A resumed run continues the model and schedule of the run that wrote the checkpoint. Detectron2
lets two changes slip through silently:

- ``SOLVER.MAX_ITER`` below the iterations already done: its training loop is empty, and it
  evaluates the checkpoint, trained longer than the config says, as this config's model.
- a model whose parameters changed shape (``MODEL.RETINANET.NUM_CLASSES`` above all): fvcore
  skips those parameters with a warning, and the first step then fails on optimizer state of the
  old shapes.

Both stop here with an error that names the checkpoint, both values and what to do instead.
``SOLVER.MAX_ITER`` equal to the iterations done (a finished run resumed as it was, e.g. one
stopped during its final evaluation) trains nothing and runs the final evaluation, as in
Detectron2, but says so.
"""

import logging

from torch import nn

__all__ = ["check_iterations_left", "check_model_fits_checkpoint"]

logger = logging.getLogger(__name__)

_CLASS_LAYER = "head.cls_score.weight"  # (A * K, C, 3, 3): A anchors x K classes
_BOX_LAYER = "head.bbox_pred.weight"  # (A * 4, C, 3, 3)


def check_iterations_left(checkpoint_file: str, start_iter: int, max_iter: int):
    """Raise if a run resumed at `start_iter` (from `checkpoint_file`) is past its `max_iter`;
    warn if it has nothing left to train."""
    if start_iter < max_iter:
        return
    train_longer = f"To train longer, set SOLVER.MAX_ITER above {start_iter}"
    if start_iter > max_iter:
        raise ValueError(
            f"--resume: {checkpoint_file} has already trained {start_iter} iterations, more than "
            f"SOLVER.MAX_ITER = {max_iter}, so it is not the model this config describes. "
            f"{train_longer}; to evaluate the checkpoint, run with --eval-only MODEL.WEIGHTS "
            f"{checkpoint_file}."
        )
    logger.warning(
        f"--resume: {checkpoint_file} has trained all {max_iter} iterations of SOLVER.MAX_ITER "
        f"= {max_iter}: nothing is left to train, only the final evaluation runs. {train_longer}."
    )


def check_model_fits_checkpoint(checkpoint_file: str, checkpoint_state: dict, model: nn.Module):
    """Raise if a parameter of `checkpoint_state` (being resumed from) has another shape in
    `model`; the classification layer's message names both class counts."""
    model_state = model.state_dict()
    mismatches = []
    for key, value in checkpoint_state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        shape = tuple(getattr(value, "shape", ()))  # tensors, or numpy arrays from a .pkl
        if key in model_state and shape != tuple(model_state[key].shape):
            mismatches.append((key, shape, tuple(model_state[key].shape)))
    if not mismatches:
        return
    instead = (
        "use a fresh OUTPUT_DIR, or fine-tune from this checkpoint without --resume: "
        f"MODEL.WEIGHTS {checkpoint_file} (parameters whose shapes differ are then skipped, with "
        "a warning, and start from their initialisation)."
    )
    by_key = {key: shapes for key, *shapes in mismatches}
    checkpoint_shape, model_shape = by_key.get(_CLASS_LAYER, ((), ()))
    # Only the number of class outputs differs (not the channels: that is another model).
    if (
        _CLASS_LAYER in by_key
        and checkpoint_shape[1:] == model_shape[1:]
        and _BOX_LAYER in model_state
        and _BOX_LAYER not in by_key
    ):
        # A anchors per location (bbox_pred: 4 A outputs), each with K logits, or K + 1 with
        # a background logit (softmax losses).
        num_anchors = model_state[_BOX_LAYER].shape[0] // 4
        extra_logits = model_shape[0] // num_anchors - model.num_classes
        raise ValueError(
            f"--resume: {checkpoint_file} holds a model for "
            f"{checkpoint_shape[0] // num_anchors - extra_logits} classes ({_CLASS_LAYER} has shape "
            f"{checkpoint_shape}), but MODEL.RETINANET.NUM_CLASSES = {model.num_classes} (shape "
            f"{model_shape}). A resumed run continues the model it saved; to train for "
            f"{model.num_classes} classes, {instead}"
        )
    listed = ", ".join(f"{key} {ckpt} -> {now}" for key, ckpt, now in mismatches[:3])
    more = f" and {len(mismatches) - 3} more" if len(mismatches) > 3 else ""
    raise ValueError(
        f"--resume: {checkpoint_file} holds parameters of other shapes than this config's model "
        f"({listed}{more}). A resumed run continues the model it saved, so it needs the config "
        f"that run used; for a different model, {instead}"
    )
