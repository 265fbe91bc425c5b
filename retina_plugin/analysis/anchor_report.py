"""
The anchor coverage report (see :mod:`.anchor_coverage`): the share of boxes learned only through
low-quality matches, overall and by size and aspect ratio, the positive anchors per pyramid level,
and measured KEY VALUE overrides (:mod:`.anchor_advice`). Written as text, as anchor_stats.png
(histogram of the best IoUs with the thresholds, and the uncovered share by size), anchor_stats.csv
(one row per box) and anchor_stats.json (the summary and the advice).
"""

import csv
import json
import os
from typing import Optional

from matplotlib.figure import Figure

from ..modeling import build_anchor_matcher
from .anchor_advice import advise
from .anchor_coverage import (
    COCO_SIZES,
    AnchorGrid,
    ImageBoxes,
    collect_stats,
    coverage_tables,
    iou_bands,
    level_table,
    load_image_boxes,
)
from .config import load_analysis_config
from .outputs import AnalysisReport, save_figure

__all__ = [
    "anchor_coverage_report",
    "summarize",
    "format_report",
    "write_csv",
    "plot",
]

DEFAULT_MAX_IMAGES = 1000
DEFAULT_OUTPUT_DIR = "output/anchor_stats"


def anchor_coverage_report(
    config_file: str,
    opts=(),
    output_dir: str = DEFAULT_OUTPUT_DIR,
    *,
    max_images: int = DEFAULT_MAX_IMAGES,
    min_size: Optional[int] = None,
    poor_share: float = 0.1,
) -> AnalysisReport:
    """
    Measure how the anchors of the config `config_file` (with the KEY VALUE overrides `opts`)
    cover the boxes of the first `max_images` images (0: all) of its DATASETS.TRAIN, resized to
    shortest edge `min_size` (default: the largest INPUT.MIN_SIZE_TRAIN); write
    anchor_stats.png / .csv / .json into `output_dir`.

    Args:
        poor_share: coverage of a group of boxes is poor when more than this share of them stays
            under the foreground threshold; advice is measured for such groups.
    """
    cfg = load_analysis_config(config_file, opts)
    min_size = min_size or max(cfg.INPUT.MIN_SIZE_TRAIN)
    images, num_dataset_images = load_image_boxes(cfg, max_images, min_size)
    grid = AnchorGrid(cfg)
    stats = collect_stats(images, grid, build_anchor_matcher(cfg))
    summary = summarize(
        stats, images, grid, cfg, num_dataset_images, min_size, poor_share, config_file, opts
    )

    os.makedirs(output_dir, exist_ok=True)
    png, csv_path, json_path = (
        os.path.join(output_dir, f"anchor_stats.{ext}") for ext in ("png", "csv", "json")
    )
    plot(stats, summary, png)
    write_csv(stats, images, grid.level_names, summary["iou"]["foreground_from"], csv_path)
    with open(json_path, "w") as f:
        json.dump(summary, f, indent=2)
    return AnalysisReport(summary, format_report(summary), [png, csv_path, json_path])


def summarize(
    stats: dict,
    images: list[ImageBoxes],
    grid: AnchorGrid,
    cfg,
    num_dataset_images: int,
    min_size: int,
    poor_share: float,
    config_file: str = "",
    opts=(),
) -> dict:
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
        "config_file": config_file,
        "opts": list(opts),
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
        "advice": advise(stats, images, grid, cfg, fg, poor_share),
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
    figure = Figure(figsize=(11, 4.2), dpi=100)
    left, right = figure.subplots(1, 2)
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
    save_figure(figure, path)
