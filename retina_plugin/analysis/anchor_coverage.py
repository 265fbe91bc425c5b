"""
How well a config's anchors cover its training boxes: for every ground-truth box of
DATASETS.TRAIN, resized as the train loader resizes it, the best IoU any anchor reaches with it,
and what the model's anchor Matcher (:func:`retina_plugin.modeling.build_anchor_matcher`) gives
it. A box whose best IoU stays under the foreground threshold gets positives only through the
low-quality matches: the anchor(s) with its best IoU, however poor.

The anchors are those the model places: Detectron2's anchor generator built as
:class:`FocalRetinaNet` builds it, on the feature maps its backbone gives for the padded image.
The backbone runs on the meta device (shapes only: no weights, no arithmetic).

Resizing: the train loader picks the shortest edge at random from INPUT.MIN_SIZE_TRAIN; here it is
the largest of them (deterministic; the most favourable case for small boxes), or `min_size`.
Each image is padded on its own (a batch pads to its largest image, which only adds anchors
beyond the image); horizontal flips are left out.
"""

import math
from dataclasses import dataclass

import torch
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.modeling import build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, ImageList, pairwise_iou
from torch import Tensor

from ..data import load_train_datasets, read_image_file
from ..modeling import in_feature_shapes

__all__ = [
    "COCO_SIZES",
    "ImageBoxes",
    "load_image_boxes",
    "AnchorGrid",
    "smallest_anchor_size",
    "match_image",
    "best_ious",
    "collect_stats",
    "iou_bands",
    "bucket_table",
    "coverage_tables",
    "level_table",
]

# COCO's object sizes (area in the original image), used by its APs / APm / APl.
COCO_SIZES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, math.inf))
# sqrt(area) after resizing: half-octave buckets from 8 px to 512 px.
SQRT_AREA_EDGES = [0.0] + [2 ** (k / 2) for k in range(6, 19)] + [math.inf]
# Aspect ratio h / w (Detectron2's ASPECT_RATIOS convention), half-octave buckets around 1.
ASPECT_EDGES = [0.0, 1 / 4, 2**-1.5, 2**-0.5, 2**0.5, 2**1.5, 4.0, math.inf]


@dataclass
class ImageBoxes:
    """One training image's boxes as the model sees them."""

    image_id: object
    image_size: tuple[int, int]  # (H, W) after resizing
    boxes: Boxes  # (G, 4) XYXY after resizing
    original_areas: Tensor  # (G,) box areas in the original image


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
    The anchors the model places on an image: Detectron2's anchor generator built from the config
    as FocalRetinaNet builds it, on the feature maps of MODEL.RETINANET.IN_FEATURES that the
    backbone gives for the padded image.
    """

    def __init__(self, cfg, backbone=None, grid_sizes=None):
        """`backbone` and `grid_sizes` (a cache) are shared by :meth:`with_config`."""
        if backbone is None:
            with torch.device("meta"):  # feature-map shapes only: no weights are made
                backbone = build_backbone(cfg)
        self.backbone = backbone
        self.num_channels = len(cfg.MODEL.PIXEL_MEAN)  # the backbone's input channels
        self.level_names = list(cfg.MODEL.RETINANET.IN_FEATURES)
        self.feature_shapes = in_feature_shapes(cfg, backbone)
        self.generator = build_anchor_generator(cfg, self.feature_shapes)
        self._grid_sizes = {} if grid_sizes is None else grid_sizes  # padded (H, W) -> per level
        self._anchors: dict[tuple[int, int], tuple[Boxes, Tensor]] = {}

    def with_config(self, cfg) -> "AnchorGrid":
        """The same backbone with the anchor generator of `cfg` (e.g. other sizes)."""
        return AnchorGrid(cfg, self.backbone, self._grid_sizes)

    def padded_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) that the model pads an image of `image_size` to (batch of one image)."""
        images = ImageList.from_tensors(  # as DenseDetector.preprocess_image
            [torch.empty(0, *image_size, device="meta")],
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        return tuple(images.tensor.shape[-2:])

    def feature_maps(self, padded_size: tuple[int, int]) -> list[Tensor]:
        """Per level, an empty (1, 0, Hi, Wi) map of the backbone's grid for a padded image."""
        if padded_size not in self._grid_sizes:
            with torch.no_grad():
                image = torch.empty(1, self.num_channels, *padded_size, device="meta")
                outputs = self.backbone(image)
            self._grid_sizes[padded_size] = [outputs[f].shape[-2:] for f in self.level_names]
        # The generator only reads the shapes of the feature maps.
        return [torch.empty(1, 0, h, w) for h, w in self._grid_sizes[padded_size]]

    def anchors(self, image_size: tuple[int, int]) -> tuple[Boxes, Tensor]:
        """
        Returns:
            Boxes: (R, 4) all anchors, level by level, as the model concatenates them.
            Tensor: (R,) the level index of each anchor.
        """
        padded = self.padded_size(image_size)
        if padded not in self._anchors:
            per_level = self.generator(self.feature_maps(padded))
            levels = torch.cat(
                [torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(per_level)]
            )
            self._anchors[padded] = (Boxes.cat(per_level), levels)
        return self._anchors[padded]

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
    anchors: Boxes, levels: Tensor, boxes: Boxes, matcher: Matcher, num_levels: int
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


def best_ious(images: list[ImageBoxes], grid: AnchorGrid) -> Tensor:
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


def _edge_label(low: float, high: float, unit: str = "") -> str:
    def fmt(x):
        return f"{x:.3g}" if x < 10 else f"{x:.0f}"

    if low == 0:
        return f"< {fmt(high)}{unit}"
    if math.isinf(high):
        return f">= {fmt(low)}{unit}"
    return f"{fmt(low)}-{fmt(high)}{unit}"


def bucket_table(values: Tensor, below_fg: Tensor, best_iou: Tensor, buckets) -> list[dict]:
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
    return {
        "coco_size": bucket_table(stats["original_area"], below, iou, coco),
        "sqrt_area": bucket_table(
            stats["sqrt_area"], below, iou, _buckets_from_edges(SQRT_AREA_EDGES, " px")
        ),
        "aspect_ratio": bucket_table(
            stats["aspect"], below, iou, _buckets_from_edges(ASPECT_EDGES)
        ),
    }


def level_table(stats: dict, level_names: list[str], num_images: int) -> list[dict]:
    """Per pyramid level: its positive anchors, their share of all, and their number per image."""
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
