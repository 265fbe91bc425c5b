#!/usr/bin/env python
"""
Anchor coverage report: how well a config's anchors cover its training boxes, and what to change.

    python tools/anchor_stats.py --config-file configs/quickstart.yaml --max-images 300 \\
        --output-dir docs

For every ground-truth box of DATASETS.TRAIN, resized as the train loader resizes it, this finds
the best IoU any anchor reaches with it, and runs the model's anchor Matcher
(MODEL.RETINANET.IOU_THRESHOLDS / IOU_LABELS, low-quality matches allowed, as FocalRetinaNet).
A box whose best IoU stays under the foreground threshold gets positives only through the
low-quality matches: the anchor(s) with its best IoU, however poor.

It prints the share of such boxes overall and by size and aspect ratio, the positive anchors per
pyramid level, and KEY VALUE overrides (smaller first-level anchors, extra aspect ratios) that it
has measured to cover more boxes. Written to --output-dir: anchor_stats.png (histogram of the best
IoUs with the thresholds, and the uncovered share by size), anchor_stats.csv (one row per box)
and anchor_stats.json (the summary and the advice).

Resizing: the train loader picks the shortest edge at random from INPUT.MIN_SIZE_TRAIN; here it is
the largest of them (deterministic; the most favourable case for small boxes), or --min-size.
Each image is padded on its own (a batch pads to its largest image, which only adds anchors
beyond the image); horizontal flips are left out.
"""

import argparse
import csv
import json
import math
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from detectron2.data import detection_utils  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402
from detectron2.modeling.anchor_generator import build_anchor_generator  # noqa: E402
from detectron2.modeling.matcher import Matcher  # noqa: E402
from detectron2.structures import Boxes, ImageList, pairwise_iou  # noqa: E402

from retina_plugin import load_config  # noqa: E402
from retina_plugin.data import (  # noqa: E402
    load_train_datasets,
    read_image_file,
    register_datasets_from_config,
)

# COCO's object sizes (area in the original image), used by its APs / APm / APl.
COCO_SIZES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, math.inf))
# sqrt(area) after resizing: half-octave buckets from 8 px to 512 px.
SQRT_AREA_EDGES = [0.0] + [2 ** (k / 2) for k in range(6, 19)] + [math.inf]
# Aspect ratio h / w (Detectron2's ASPECT_RATIOS convention), half-octave buckets around 1.
ASPECT_EDGES = [0.0, 1 / 4, 2**-1.5, 2**-0.5, 2**0.5, 2**1.5, 4.0, math.inf]
DEFAULT_MAX_IMAGES = 1000


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--output-dir", default="anchor_stats", help="folder for PNG, CSV, JSON")
    parser.add_argument(
        "--max-images",
        type=int,
        default=DEFAULT_MAX_IMAGES,
        help=f"the first N training images (default {DEFAULT_MAX_IMAGES}; 0: all)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="shortest edge to resize to (default: the largest INPUT.MIN_SIZE_TRAIN)",
    )
    parser.add_argument(
        "--poor-share",
        type=float,
        default=0.1,
        help="coverage of a group of boxes is poor when more than this share of them stays "
        "under the foreground threshold (default 0.1)",
    )
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def iou_bands(thresholds, labels) -> tuple[float, float]:
    """
    (bg, fg): IoU below bg is background, IoU from fg on is foreground, for the Matcher's
    ``thresholds`` (T,) and ``labels`` (T + 1,) (e.g. [0.4, 0.5], [0, -1, 1] -> (0.4, 0.5)).
    """
    bounds = [0.0] + list(thresholds) + [1.0]
    num_bg = next((i for i, label in enumerate(labels) if label != 0), len(labels))
    first_fg = len(labels)
    while first_fg > 0 and labels[first_fg - 1] == 1:
        first_fg -= 1
    return bounds[num_bg], bounds[first_fg]


@dataclass
class ImageBoxes:
    """One training image's boxes as the model sees them."""

    image_id: object
    image_size: tuple[int, int]  # (H, W) after resizing
    boxes: Boxes  # (G, 4) XYXY after resizing
    original_areas: torch.Tensor  # (G,) box areas in the original image


def load_image_boxes(cfg, max_images: int, min_size: int) -> tuple[list[ImageBoxes], int]:
    """
    The boxes of the first `max_images` images (0: all) of DATASETS.TRAIN, as the train loader
    gets them (load_train_datasets: boxes sanitised, images without boxes filtered as configured),
    resized to shortest edge `min_size` (at most INPUT.MAX_SIZE_TRAIN) by the train mapper's own
    box functions. Returns them and the number of images the datasets hold.
    """
    dicts = [record for records in load_train_datasets(cfg).values() for record in records]
    chosen = dicts[:max_images] if max_images > 0 else dicts
    return [_resize_boxes(d, min_size, cfg.INPUT.MAX_SIZE_TRAIN) for d in chosen], len(dicts)


def _resize_boxes(record: dict, min_size: int, max_size: int) -> ImageBoxes:
    if "height" in record and "width" in record:
        height, width = record["height"], record["width"]
    else:  # not every dataset records the size; the image has it
        height, width = read_image_file(record["file_name"])[0].shape[:2]
    new_size = T.ResizeShortestEdge.get_output_shape(height, width, min_size, max_size)
    transforms = T.TransformList([T.ResizeTransform(height, width, *new_size)])
    # As DatasetMapper: crowd boxes are dropped, boxes clipped to the image, empty ones removed.
    annotations = [
        detection_utils.transform_instance_annotations(obj, transforms, new_size)
        for obj in record.get("annotations", [])
        if obj.get("iscrowd", 0) == 0
    ]
    instances = detection_utils.annotations_to_instances(annotations, new_size)
    instances = detection_utils.filter_empty_instances(instances, by_mask=False)
    boxes = instances.gt_boxes
    scale = (new_size[0] / height) * (new_size[1] / width)
    return ImageBoxes(record.get("image_id"), new_size, boxes, boxes.area() / scale)


class AnchorGrid:
    """
    The anchors the model places on a padded image: Detectron2's anchor generator built from
    the config, on the grid of each of the backbone's MODEL.RETINANET.IN_FEATURES.
    """

    def __init__(self, cfg, backbone=None):
        built_here = backbone is None
        backbone = build_backbone(cfg) if built_here else backbone
        shapes = backbone.output_shape()
        features = list(cfg.MODEL.RETINANET.IN_FEATURES)
        missing = [f for f in features if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.RETINANET.IN_FEATURES names {missing}, which the backbone does not "
                f"output; it outputs {sorted(shapes)}."
            )
        self.backbone = backbone
        self.level_names = features
        self.feature_shapes: list[ShapeSpec] = [shapes[f] for f in features]
        self.generator = build_anchor_generator(cfg, self.feature_shapes)
        self._cache: dict[tuple[int, int], tuple[Boxes, torch.Tensor]] = {}
        if built_here:  # a backbone passed in was checked when it was built
            self._check_grid_sizes()

    def with_config(self, cfg) -> "AnchorGrid":
        """The same backbone with the anchor generator of `cfg` (e.g. other sizes)."""
        return AnchorGrid(cfg, self.backbone)

    def padded_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) that the model pads an image of `image_size` to (batch of one image)."""
        empty = torch.empty(0, *image_size)
        images = ImageList.from_tensors(
            [empty],
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        return tuple(images.tensor.shape[-2:])

    def grid_sizes(self, padded_size: tuple[int, int]) -> list[tuple[int, int]]:
        # Stride-2 convolutions with "same" padding give ceil(size / 2) at each step, so each
        # level's grid is ceil(size / stride); _check_grid_sizes verifies this on the backbone.
        return [
            (math.ceil(padded_size[0] / s.stride), math.ceil(padded_size[1] / s.stride))
            for s in self.feature_shapes
        ]

    def _check_grid_sizes(self):
        divisor = max(self.backbone.size_divisibility, 32)
        probe = (3 * divisor, 5 * divisor)  # odd multiples: levels past the divisor round up
        self.backbone.eval()
        with torch.no_grad():
            outputs = self.backbone(torch.zeros(1, 3, *probe))
        actual = [tuple(outputs[f].shape[-2:]) for f in self.level_names]
        if actual != self.grid_sizes(probe):
            raise ValueError(
                f"The backbone {type(self.backbone).__name__} gives feature grids {actual} for a "
                f"{probe} image, not ceil(size / stride) = {self.grid_sizes(probe)}: "
                "anchor_stats cannot place its anchors without running it on every image."
            )

    def anchors(self, image_size: tuple[int, int]) -> tuple[Boxes, torch.Tensor]:
        """
        Returns:
            Boxes: (R, 4) all anchors, level by level, as the model concatenates them.
            Tensor: (R,) the level index of each anchor.
        """
        padded = self.padded_size(image_size)
        if padded not in self._cache:
            # The generator only reads the shapes of the feature maps: give it empty ones.
            features = [torch.empty(1, 0, h, w) for h, w in self.grid_sizes(padded)]
            per_level = self.generator(features)
            levels = torch.cat(
                [torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(per_level)]
            )
            self._cache[padded] = (Boxes.cat(per_level), levels)
        return self._cache[padded]

    def describe(self) -> str:
        parts = []
        for name, cell in zip(self.level_names, self.generator.cell_anchors):
            side = ((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1])).sqrt()  # (A,)
            parts.append(f"{name} {side.min():.0f}-{side.max():.0f}")
        return "anchor sizes (sqrt area) " + ", ".join(parts)


def smallest_anchor_size(grid: AnchorGrid) -> float:
    """The smallest sqrt(area) of the first level's anchors, rounded off float noise."""
    cell = list(grid.generator.cell_anchors)[0]  # (A, 4) level 0, centred on the origin
    return round(((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1])).sqrt().min().item(), 3)


def match_image(
    anchors: Boxes, levels: torch.Tensor, boxes: Boxes, matcher: Matcher, num_levels: int
) -> dict:
    """
    Args:
        anchors: (R, 4) anchors; levels: (R,) their level index; boxes: (G, 4) ground truth.

    Returns:
        dict with "best_iou" (G,), "best_level" (G,) the level of the best anchor,
        "num_positive" (G,) positive anchors matched to each box, and "positives_per_level" (L,).
    """
    if len(boxes) == 0:
        empty = torch.zeros(0)
        return {
            "best_iou": empty,
            "best_level": empty.long(),
            "num_positive": empty.long(),
            "positives_per_level": torch.zeros(num_levels, dtype=torch.long),
        }
    iou = pairwise_iou(boxes, anchors)  # (G, R)
    best_iou, best_anchor = iou.max(dim=1)  # (G,)
    matched_idxs, anchor_labels = matcher(iou)  # (R,), (R,)
    positive = anchor_labels == 1
    return {
        "best_iou": best_iou,
        "best_level": levels[best_anchor],
        # A box can lose the anchors it matches best to another box with a higher IoU.
        "num_positive": torch.bincount(matched_idxs[positive], minlength=len(boxes)),
        "positives_per_level": torch.bincount(levels[positive], minlength=num_levels),
    }


def best_ious(images: list[ImageBoxes], grid: AnchorGrid) -> torch.Tensor:
    """(B,) the best anchor IoU of every box of `images`, in order."""
    values = [torch.zeros(0)]
    for image in images:
        if len(image.boxes):
            anchors, _ = grid.anchors(image.image_size)
            values.append(pairwise_iou(image.boxes, anchors).max(dim=1).values)
    return torch.cat(values)


def collect_stats(images: list[ImageBoxes], grid: AnchorGrid, matcher: Matcher) -> dict:
    """
    Per box (B boxes in all): "best_iou", "best_level", "num_positive", "sqrt_area" (after
    resizing), "aspect" (h / w), "original_area", "image_index", "boxes" (B, 4); and
    "positives_per_level" (L,) summed over the images.
    """
    if not images:
        raise ValueError("No training image to measure: DATASETS.TRAIN gave none.")
    num_levels = len(grid.level_names)
    per_image = []
    for image in images:
        anchors, levels = grid.anchors(image.image_size)
        per_image.append(match_image(anchors, levels, image.boxes, matcher, num_levels))
    boxes = torch.cat([torch.zeros(0, 4)] + [image.boxes.tensor for image in images])
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    stats = {key: torch.cat([m[key] for m in per_image]) for key in per_image[0]}
    stats["positives_per_level"] = stats["positives_per_level"].reshape(len(images), -1).sum(0)
    stats.update(
        boxes=boxes,
        sqrt_area=(widths * heights).sqrt(),
        aspect=heights / widths,
        original_area=torch.cat([torch.zeros(0)] + [image.original_areas for image in images]),
        image_index=torch.cat(
            [torch.full((len(image.boxes),), i, dtype=torch.long) for i, image in enumerate(images)]
            + [torch.zeros(0, dtype=torch.long)]
        ),
    )
    return stats


def _edge_label(low: float, high: float, unit: str = "") -> str:
    def fmt(x):
        return f"{x:.3g}" if x < 10 else f"{x:.0f}"

    if low == 0:
        return f"< {fmt(high)}{unit}"
    if math.isinf(high):
        return f">= {fmt(low)}{unit}"
    return f"{fmt(low)}-{fmt(high)}{unit}"


def bucket_table(values: torch.Tensor, below_fg: torch.Tensor, best_iou, buckets) -> list[dict]:
    """
    One row per non-empty bucket of `values` (B,): its name, the number of boxes, how many stay
    below the foreground threshold (`below_fg`: (B,) bool), that share, and the median best IoU.
    `buckets` is a list of (name, low, high), low <= value < high.
    """
    rows = []
    for name, low, high in buckets:
        inside = (values >= low) & (values < high)
        count = int(inside.sum())
        if count:
            num_below = int((below_fg & inside).sum())
            rows.append(
                {
                    "bucket": name,
                    "boxes": count,
                    "below_fg": num_below,
                    "share_below_fg": num_below / count,
                    "median_best_iou": best_iou[inside].median().item(),
                }
            )
    return rows


def _buckets_from_edges(edges, unit: str = ""):
    return [(_edge_label(lo, hi, unit), lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]


def coverage_tables(stats: dict, fg: float) -> dict:
    """The tables of the share of boxes below the foreground threshold, by size and aspect."""
    below = stats["best_iou"] < fg
    iou = stats["best_iou"]
    coco = [(f"{name} (area {_edge_label(lo, hi)})", lo, hi) for name, lo, hi in COCO_SIZES]
    aspect = [(_edge_label(lo, hi), lo, hi) for lo, hi in zip(ASPECT_EDGES[:-1], ASPECT_EDGES[1:])]
    return {
        "coco_size": bucket_table(stats["original_area"], below, iou, coco),
        "sqrt_area": bucket_table(
            stats["sqrt_area"], below, iou, _buckets_from_edges(SQRT_AREA_EDGES, " px")
        ),
        "aspect_ratio": bucket_table(stats["aspect"], below, iou, aspect),
    }


def level_table(stats: dict, level_names: list[str], num_images: int) -> list[dict]:
    counts = stats["positives_per_level"]
    total = max(int(counts.sum()), 1)
    return [
        {
            "level": name,
            "positives": int(count),
            "share": int(count) / total,
            "per_image": int(count) / max(num_images, 1),
        }
        for name, count in zip(level_names, counts)
    ]


def _format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


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


def _share(values: torch.Tensor, mask: torch.Tensor, fg: float) -> float:
    count = int(mask.sum())
    return float((values[mask] < fg).sum()) / count if count else 0.0


def advise_sizes(stats, images, grid, cfg, fg: float, poor_share: float) -> list[dict]:
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


def _suggested_ratio(aspects: torch.Tensor) -> float:
    """The geometric median of the given h / w ratios, to 2 significant digits."""
    ratio = aspects.log().median().exp().item()
    return float(f"{ratio:.2g}")


def advise_ratios(stats, images, grid, cfg, fg: float, poor_share: float) -> list[dict]:
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


def advise(stats, images, grid, cfg, fg: float, poor_share: float) -> list[dict]:
    """Each piece of advice: {"text", "override": [KEY, VALUE] or None}."""
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


def summarize(stats, images, grid, cfg, args, num_dataset_images: int, min_size: int) -> dict:
    """The report as a JSON-able dict (what is printed, and anchor_stats.json)."""
    bg, fg = iou_bands(cfg.MODEL.RETINANET.IOU_THRESHOLDS, cfg.MODEL.RETINANET.IOU_LABELS)
    iou = stats["best_iou"]
    num_boxes = len(iou)
    if num_boxes == 0:
        raise ValueError(
            f"DATASETS.TRAIN = {list(cfg.DATASETS.TRAIN)}: the {len(images)} images read hold no "
            "ground-truth boxes."
        )
    return {
        "config_file": args.config_file,
        "opts": list(args.opts),
        "datasets": list(cfg.DATASETS.TRAIN),
        "num_images": len(images),
        "num_images_in_datasets": num_dataset_images,
        "resize": {"shortest_edge": min_size, "max_size": cfg.INPUT.MAX_SIZE_TRAIN},
        "anchors": grid.describe(),
        "aspect_ratios": [list(r) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS],
        "iou": {"background_below": bg, "foreground_from": fg},
        "num_boxes": num_boxes,
        "best_iou": {
            "mean": iou.mean().item(),
            "median": iou.median().item(),
            "p10": iou.quantile(0.1).item(),
        },
        "below_fg": {"count": int((iou < fg).sum()), "share": float((iou < fg).float().mean())},
        "below_bg": {"count": int((iou < bg).sum()), "share": float((iou < bg).float().mean())},
        "boxes_without_positive": int((stats["num_positive"] == 0).sum()),
        **{f"by_{k}": v for k, v in coverage_tables(stats, fg).items()},
        "positives_per_level": level_table(stats, grid.level_names, len(images)),
        "advice": advise(stats, images, grid, cfg, fg, args.poor_share),
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = [header] + [["-" * w for w in widths]] + rows
    return "\n".join(
        "  ".join(
            str(cell).rjust(w) if i else str(cell).ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths))
        )
        for line in lines
    )


def _bucket_rows(rows: list[dict]) -> list[list[str]]:
    return [
        [
            r["bucket"],
            str(r["boxes"]),
            str(r["below_fg"]),
            f"{r['share_below_fg']:.1%}",
            f"{r['median_best_iou']:.2f}",
        ]
        for r in rows
    ]


def format_report(summary: dict) -> str:
    """The text report printed to stdout."""
    fg, bg = summary["iou"]["foreground_from"], summary["iou"]["background_below"]
    below, iou = summary["below_fg"], summary["best_iou"]
    header = ["", "boxes", f"< {fg:g}", "share", "median IoU"]
    lines = [
        f"Anchor coverage: {summary['config_file']} on {', '.join(summary['datasets'])} "
        f"({summary['num_images']} of {summary['num_images_in_datasets']} images, shortest edge "
        f"{summary['resize']['shortest_edge']}, longest at most {summary['resize']['max_size']})",
        f"{summary['anchors']}; aspect ratios h/w {summary['aspect_ratios']}",
        f"matcher: IoU < {bg:g} background, >= {fg:g} foreground, low-quality matches allowed",
        "",
        f"{summary['num_boxes']} boxes; best anchor IoU: mean {iou['mean']:.3f}, median "
        f"{iou['median']:.3f}, 10th percentile {iou['p10']:.3f}",
        f"best IoU below the foreground threshold {fg:g} (positives only through low-quality "
        f"matches): {below['count']} boxes ({below['share']:.1%}); below {bg:g}: "
        f"{summary['below_bg']['count']} ({summary['below_bg']['share']:.1%})",
        f"boxes left with no positive anchor (their best anchors went to other boxes): "
        f"{summary['boxes_without_positive']}",
        "",
        _table(["by COCO size"] + header[1:], _bucket_rows(summary["by_coco_size"])),
        "",
        _table(["by sqrt(area), resized"] + header[1:], _bucket_rows(summary["by_sqrt_area"])),
        "",
        _table(["by aspect ratio h/w"] + header[1:], _bucket_rows(summary["by_aspect_ratio"])),
        "",
        _table(
            ["positives by level", "anchors", "share", "per image"],
            [
                [r["level"], str(r["positives"]), f"{r['share']:.1%}", f"{r['per_image']:.1f}"]
                for r in summary["positives_per_level"]
            ],
        ),
        "",
        "advice:",
    ]
    for item in summary["advice"]:
        lines.append(f"- {item['text']}")
        if item["override"]:
            key, value = item["override"]
            lines.append(f'    {key} "{value}"')
    return "\n".join(lines)


def write_csv(stats: dict, images: list[ImageBoxes], level_names: list[str], fg: float, path):
    """One row per box: where it is (resized), its size, its best IoU and positives."""
    columns = [
        "image_id",
        "x0",
        "y0",
        "x1",
        "y1",
        "sqrt_area",
        "aspect_h_over_w",
        "original_area",
        "best_iou",
        "best_level",
        "num_positive_anchors",
        "below_fg",
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i in range(len(stats["best_iou"])):
            writer.writerow(
                [images[stats["image_index"][i]].image_id]
                + [f"{x:.1f}" for x in stats["boxes"][i].tolist()]
                + [
                    f"{stats['sqrt_area'][i]:.2f}",
                    f"{stats['aspect'][i]:.3f}",
                    f"{stats['original_area'][i]:.1f}",
                    f"{stats['best_iou'][i]:.4f}",
                    level_names[stats["best_level"][i]],
                    int(stats["num_positive"][i]),
                    int(stats["best_iou"][i] < fg),
                ]
            )


def plot(stats: dict, summary: dict, path: str):
    """Left: histogram of the best IoUs by COCO size, thresholds marked. Right: share below fg
    by sqrt(area)."""
    fg, bg = summary["iou"]["foreground_from"], summary["iou"]["background_below"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    groups, names = [], []
    for name, low, high in COCO_SIZES:
        inside = (stats["original_area"] >= low) & (stats["original_area"] < high)
        if inside.any():
            groups.append(stats["best_iou"][inside].numpy())
            names.append(name)
    left.hist(groups, bins=40, range=(0, 1), stacked=True, label=names)
    left.axvline(bg, color="0.3", linestyle="--", label=f"background below {bg:g}")
    left.axvline(fg, color="crimson", label=f"foreground from {fg:g}")
    left.set_xlabel("best anchor IoU of each ground-truth box")
    left.set_ylabel("boxes")
    left.legend(fontsize=8)
    left.set_title(f"{summary['num_boxes']} boxes, {summary['below_fg']['share']:.1%} below {fg:g}")
    rows = summary["by_sqrt_area"]
    positions = range(len(rows))
    right.bar(positions, [100 * r["share_below_fg"] for r in rows], color="crimson", alpha=0.7)
    for x, r in zip(positions, rows):
        right.text(
            x, 100 * r["share_below_fg"], f"n={r['boxes']}", ha="center", va="bottom", fontsize=7
        )
    right.set_xticks(list(positions), [r["bucket"] for r in rows], rotation=30, fontsize=8)
    right.set_xlabel("sqrt(box area) after resizing")
    right.set_ylabel(f"% of boxes with best IoU < {fg:g}")
    right.set_title("boxes learned only through low-quality matches")
    figure.suptitle(
        f"Anchor coverage: {os.path.basename(summary['config_file'])} on "
        f"{', '.join(summary['datasets'])}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"  # anchors and IoUs only: no model runs
    register_datasets_from_config(cfg)
    min_size = args.min_size or max(cfg.INPUT.MIN_SIZE_TRAIN)
    images, num_dataset_images = load_image_boxes(cfg, args.max_images, min_size)
    grid = AnchorGrid(cfg)
    retina = cfg.MODEL.RETINANET
    matcher = Matcher(retina.IOU_THRESHOLDS, retina.IOU_LABELS, allow_low_quality_matches=True)
    stats = collect_stats(images, grid, matcher)
    summary = summarize(stats, images, grid, cfg, args, num_dataset_images, min_size)
    print(format_report(summary))

    os.makedirs(args.output_dir, exist_ok=True)
    paths = {
        ext: os.path.join(args.output_dir, f"anchor_stats.{ext}") for ext in ("png", "csv", "json")
    }
    plot(stats, summary, paths["png"])
    write_csv(stats, images, grid.level_names, summary["iou"]["foreground_from"], paths["csv"])
    with open(paths["json"], "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {paths['png']}, {paths['csv']}, {paths['json']}")
    return summary


if __name__ == "__main__":
    main()
