"""Config checks that run when a component is built, so a bad YAML fails before training.

Each check raises ``ValueError`` naming the key, its value and what is allowed.
"""

import math
from collections.abc import Sequence


def check_in_range(
    key: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False
):
    """Raise unless low <= value <= high (strict where `low_open` / `high_open`)."""
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{key} = {value} is out of range: it must lie in {interval}.")


def check_at_least(key: str, value, low: float):
    if not math.isfinite(value) or value < low:
        raise ValueError(f"{key} = {value} is out of range: it must be >= {low}.")


def check_iou_bands(thresholds: Sequence[float], labels: Sequence[int], prefix: str):
    """The anchor matcher's IoU bands (paper: [0, 0.4) background, [0.4, 0.5) ignored, >= 0.5 fg)."""
    thresholds_key, labels_key = f"{prefix}.IOU_THRESHOLDS", f"{prefix}.IOU_LABELS"
    for t in thresholds:
        check_in_range(thresholds_key, t, 0.0, 1.0)
    if any(a > b for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(
            f"{thresholds_key} = {list(thresholds)} must be non-decreasing, e.g. [0.4, 0.5]."
        )
    if len(labels) != len(thresholds) + 1:
        raise ValueError(
            f"{labels_key} = {list(labels)} must have one label per IoU band, i.e. "
            f"len({thresholds_key}) + 1 = {len(thresholds) + 1} labels, e.g. [0, -1, 1]."
        )
    if any(label not in (-1, 0, 1) for label in labels):
        raise ValueError(
            f"{labels_key} = {list(labels)}: each label must be 0 (background), "
            "-1 (ignored) or 1 (foreground)."
        )


def check_registered(key: str, name: str, registry):
    if name not in registry:
        known = ", ".join(sorted(n for n, _ in registry))
        raise ValueError(f"{key} = {name!r} is not registered in {registry._name}; known: {known}.")
