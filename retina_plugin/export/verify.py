"""Do an exported model's detections equal PyTorch's? One image's detections compared as sets."""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SCORE_TOLERANCE", "BOX_TOLERANCE", "Comparison", "compare_detections"]

SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 0.01  # pixels


@dataclass
class Comparison:
    """The comparison of the detections of some images: counts, the largest differences of the
    matched detections, and what could not be matched (empty when the outputs agree)."""

    images: int = 0
    detections: int = 0
    max_score_diff: float = 0.0
    max_box_diff: float = 0.0
    mismatches: list = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        verdict = "equal" if self.equal else f"DIFFERENT on {len(self.mismatches)} image(s)"
        return (
            f"{verdict}: {self.images} images, {self.detections} detections, largest score "
            f"difference {self.max_score_diff:.2e}, largest box difference "
            f"{self.max_box_diff:.2e} px (tolerances {SCORE_TOLERANCE:g}, {BOX_TOLERANCE:g} px)"
        )


def compare_detections(comparison: Comparison, name: str, expected, actual):
    """
    Add one image's comparison to `comparison`. `expected` and `actual` are (boxes (D, 4),
    scores (D,), classes (D,)). They agree when both have the same number of detections and each
    expected one has its own actual one of the same class, a score within SCORE_TOLERANCE and a
    box within BOX_TOLERANCE px. Matched as sets: detections whose scores differ by float
    rounding may come in another order.
    """
    exp_boxes, exp_scores, exp_classes = (np.asarray(x) for x in expected)
    act_boxes, act_scores, act_classes = (np.asarray(x) for x in actual)
    comparison.images += 1
    comparison.detections += len(exp_scores)
    if len(exp_scores) != len(act_scores):
        comparison.mismatches.append(
            f"{name}: {len(exp_scores)} detections expected, {len(act_scores)} found"
        )
        return
    unused = np.ones(len(act_scores), dtype=bool)
    for i in np.argsort(-exp_scores, kind="stable"):
        box_diff = np.abs(act_boxes - exp_boxes[i]).max(axis=1)
        score_diff = np.abs(act_scores - exp_scores[i])
        fits = unused & (act_classes == exp_classes[i]) & (score_diff <= SCORE_TOLERANCE)
        fits &= box_diff <= BOX_TOLERANCE
        if not fits.any():
            comparison.mismatches.append(
                f"{name}: no match for class {int(exp_classes[i])} score {exp_scores[i]:.6f} box "
                f"{np.round(exp_boxes[i], 3).tolist()}"
            )
            return
        j = np.flatnonzero(fits)[np.argmin(box_diff[fits])]
        unused[j] = False
        comparison.max_score_diff = max(comparison.max_score_diff, float(score_diff[j]))
        comparison.max_box_diff = max(comparison.max_box_diff, float(box_diff[j]))
