"""
What to change when the anchors cover some boxes poorly: smaller first-level anchors for small
boxes, extra aspect ratios for elongated ones. Each suggestion is a KEY VALUE override whose
effect is measured on the same boxes before it is given.
"""

import json

import torch
from torch import Tensor

from .anchor_coverage import AnchorGrid, ImageBoxes, best_ious, smallest_anchor_size

__all__ = ["advise", "advise_sizes", "advise_ratios"]


def _size_candidates(cfg) -> list[tuple[object, str, str]]:
    """
    Configs whose first level has smaller anchors, one octave step at a time down to two
    octaves: (cfg, key, value) with the KEY VALUE override that makes each.
    """
    name = cfg.MODEL.ANCHOR_GENERATOR.NAME
    if name == "OctaveAnchorGenerator":
        key = "MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES"
        base_sizes = list(cfg.MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES)
        steps = cfg.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE
        firsts = sorted(
            {max(1, round(base_sizes[0] * 2 ** (-k / steps))) for k in range(1, 2 * steps + 1)},
            reverse=True,
        )
        values = [[first] + base_sizes[1:] for first in firsts if first < base_sizes[0]]
    elif name == "DefaultAnchorGenerator":
        key = "MODEL.ANCHOR_GENERATOR.SIZES"
        sizes = [list(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
        values = [
            [[round(s * 2 ** (-k / 3), 1) for s in sizes[0]]] + sizes[1:] for k in range(1, 7)
        ]
    else:
        return []
    return [_override(cfg, key, value) for value in values]


def _override(cfg, key: str, value) -> tuple[object, str, str]:
    text = json.dumps(value)  # a Python literal too, as merge_from_list parses it
    candidate = cfg.clone()
    candidate.defrost()
    candidate.merge_from_list([key, text])
    return candidate, key, text


def _share(values: Tensor, mask: Tensor, fg: float) -> float:
    count = int(mask.sum())
    return float((values[mask] < fg).sum()) / count if count else 0.0


def advise_sizes(
    stats: dict, images: list[ImageBoxes], grid: AnchorGrid, cfg, fg: float, poor_share: float
) -> list[dict]:
    """
    If boxes smaller than the smallest anchor are poorly covered, measure configs with smaller
    first-level anchors and suggest the one covering the most boxes (the largest of equals).
    """
    smallest = smallest_anchor_size(grid)
    small = stats["sqrt_area"] < smallest
    everything = torch.ones_like(small)
    before = (_share(stats["best_iou"], small, fg), _share(stats["best_iou"], everything, fg))
    if not small.any() or before[0] <= poor_share:
        return []
    text = (
        f"{before[0]:.1%} of the {int(small.sum())} boxes smaller than the smallest anchor "
        f"({smallest:.0f} px) stay below IoU {fg:g}."
    )
    measured = []  # (share of small boxes, share of all boxes, key, value), largest size first
    for candidate, key, value in _size_candidates(cfg):
        ious = best_ious(images, grid.with_config(candidate))
        measured.append((_share(ious, small, fg), _share(ious, everything, fg), key, value))
    if not measured:
        text += f" ({cfg.MODEL.ANCHOR_GENERATOR.NAME}: no anchor sizes this tool can change.)"
        return [{"text": text, "override": None}]
    after_small, after_all, key, value = min(measured, key=lambda m: m[1])
    text += (
        f" Best measured: {key} {value}: small boxes {before[0]:.1%} -> {after_small:.1%}, all "
        f"boxes {before[1]:.1%} -> {after_all:.1%}"
    )
    if before[1] - after_all < 0.01:
        stride = grid.feature_shapes[0].stride
        text += (
            f". Smaller first-level anchors do not help: on a level of stride {stride} px they "
            "align too coarsely with small boxes. Larger input images (INPUT.MIN_SIZE_TRAIN) or "
            "a finer pyramid level would."
        )
        return [{"text": text, "override": None}]
    return [{"text": text + ".", "override": [key, value]}]


def _suggested_ratio(aspects: Tensor) -> float:
    """The geometric median of the given h / w ratios, to 2 significant digits."""
    ratio = aspects.log().median().exp().item()
    return float(f"{ratio:.2g}")


def advise_ratios(
    stats: dict, images: list[ImageBoxes], grid: AnchorGrid, cfg, fg: float, poor_share: float
) -> list[dict]:
    """
    If boxes more elongated than the anchors (beyond half an octave from the extreme ratios)
    are poorly covered, measure the config with their median ratio(s) added and suggest it.
    """
    ratios = [list(r) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS]
    low, high = min(min(r) for r in ratios), max(max(r) for r in ratios)
    aspect, below = stats["aspect"], stats["best_iou"] < fg
    groups = {"tall": aspect > high * 2**0.5, "wide": aspect < low / 2**0.5}
    added = []
    for group in groups.values():
        if group.any() and _share(stats["best_iou"], group, fg) > poor_share:
            added.append(_suggested_ratio(aspect[group & below]))
    if not added:
        return []
    extreme = groups["tall"] | groups["wide"]
    value = [sorted(set(r) | set(added)) for r in ratios]
    candidate, key, text_value = _override(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", value)
    ious = best_ious(images, grid.with_config(candidate))
    before_extreme, after_extreme = (
        _share(stats["best_iou"], extreme, fg),
        _share(ious, extreme, fg),
    )
    everything = torch.ones_like(extreme)
    before_all, after_all = _share(stats["best_iou"], everything, fg), _share(ious, everything, fg)
    text = (
        f"{before_extreme:.1%} of the {int(extreme.sum())} boxes with h/w beyond "
        f"[{low / 2**0.5:.2g}, {high * 2**0.5:.2g}] stay below IoU {fg:g}. Measured with ratio(s) "
        f"{added} added: those {before_extreme:.1%} -> {after_extreme:.1%}, all boxes "
        f"{before_all:.1%} -> {after_all:.1%}"
    )
    if before_all - after_all < 0.01:
        return [{"text": text + "; not worth it.", "override": None}]
    num_anchors = len(value[0]) * len(cfg.MODEL.ANCHOR_GENERATOR.SIZES[0])
    if cfg.MODEL.ANCHOR_GENERATOR.NAME == "OctaveAnchorGenerator":
        num_anchors = len(value[0]) * cfg.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE
    text += (
        f". This makes {num_anchors} anchors per location: the head's last layers change shape, "
        "so train anew (earlier checkpoints' heads do not load)."
    )
    return [{"text": text, "override": [key, text_value]}]


def advise(
    stats: dict, images: list[ImageBoxes], grid: AnchorGrid, cfg, fg: float, poor_share: float
) -> list[dict]:
    """
    Each piece of advice: {"text", "override": [KEY, VALUE] or None}. Coverage of a group of
    boxes is poor when more than `poor_share` of them stay under the foreground threshold `fg`.
    """
    advice = advise_sizes(stats, images, grid, cfg, fg, poor_share)
    advice += advise_ratios(stats, images, grid, cfg, fg, poor_share)
    share_all = _share(stats["best_iou"], torch.ones_like(stats["best_iou"], dtype=bool), fg)
    if not advice:
        advice.append(
            {
                "text": f"Boxes smaller than the smallest anchor and boxes more elongated than "
                f"the anchors are covered well (at most {poor_share:.0%} below IoU {fg:g}); "
                f"{share_all:.1%} of all boxes stay below it. No change suggested.",
                "override": None,
            }
        )
    return advice
