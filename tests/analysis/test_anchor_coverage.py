"""The anchor coverage report (retina_plugin.analysis, tools/anchor_stats.py) on hand-made boxes."""

import csv
import json

import pytest
import torch
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes

from retina_plugin.analysis import (
    AnchorGrid,
    anchor_coverage_report,
    iou_bands,
)
from retina_plugin.analysis.anchor_coverage import match_image
from retina_plugin.modeling import build_anchor_matcher
from tests.analysis.inputs import run_tool, tiny_setup
from tests.utils import random_batch, unregister_datasets


def tall_box_best_iou() -> float:
    """The tall box's best anchor: size s = 32 * 2^(1/3), h/w = 2 (w = s / sqrt2, h = s * sqrt2),
    centred on the box, contains its width and lies inside its height."""
    size = 32 * 2 ** (1 / 3)
    width, height = size / 2**0.5, size * 2**0.5
    intersection = 16 * height
    return intersection / (16 * 96 + width * height - intersection)


def test_iou_bands():
    assert iou_bands([0.4, 0.5], [0, -1, 1]) == (0.4, 0.5)
    assert iou_bands([0.5], [0, 1]) == (0.5, 0.5)
    assert iou_bands([0.3, 0.7], [0, -1, 1]) == (0.3, 0.7)


def test_anchor_grid_is_the_models(tiny_cfg):
    """The anchors and feature grids of an odd-sized image are those the model itself uses, and
    the Matcher gives each box the positives the model's label_anchors gives it."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    batch = random_batch(num_boxes=(3,), num_classes=3, size=(97, 131))
    with torch.no_grad():
        assigned = model.assign_anchors(batch)
    grid = AnchorGrid(tiny_cfg)
    anchors, levels = grid.anchors((97, 131))
    assert torch.equal(anchors.tensor, Boxes.cat(assigned.anchors).tensor)
    assert levels.bincount().tolist() == [len(a) for a in assigned.anchors]
    # The meta-device backbone's grids are those of the real backbone on the padded image.
    padded = grid.padded_size((97, 131))
    assert padded == (128, 160)
    outputs = build_backbone(tiny_cfg).eval()(torch.zeros(1, 3, *padded))
    sizes = [tuple(outputs[f].shape[-2:]) for f in grid.level_names]
    assert [tuple(m.shape[-2:]) for m in grid.feature_maps(padded)] == sizes
    gt_boxes = batch[0]["instances"].gt_boxes
    matched = match_image(anchors, levels, gt_boxes, build_anchor_matcher(tiny_cfg), len(sizes))
    foreground = (assigned.gt_labels[0] >= 0) & (assigned.gt_labels[0] < 3)
    assert matched["num_positive"].sum() == foreground.sum() > 0
    assert (
        matched["positives_per_level"].tolist()
        == levels[foreground].bincount(minlength=len(sizes)).tolist()
    )


@pytest.fixture(scope="module")
def anchor_report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("anchor_stats")
    config_file, opts = tiny_setup(tmp_path, "anchor_stats_tiny")
    output_dir = tmp_path / "out"
    report = anchor_coverage_report(config_file, opts, str(output_dir))
    yield report, output_dir, config_file, opts
    # A shuffled test order may set this fixture up again: the name must be free then.
    unregister_datasets("anchor_stats_tiny")


def test_anchor_stats_best_ious_by_hand(anchor_report):
    summary, output_dir = anchor_report[0].data, anchor_report[1]
    with open(output_dir / "anchor_stats.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["image_id"] for row in rows] == ["1", "1", "2"]
    best = [float(row["best_iou"]) for row in rows]
    assert best == pytest.approx([1.0, 0.25, tall_box_best_iou()], abs=1e-4)
    assert [row["below_fg"] for row in rows] == ["0", "1", "1"]
    assert [row["best_level"] for row in rows] == ["p3", "p3", "p3"]
    assert [float(row["aspect_h_over_w"]) for row in rows] == [1.0, 1.0, 6.0]

    assert summary["num_images"] == 2 and summary["num_boxes"] == 3
    assert summary["below_fg"] == {"count": 2, "share": pytest.approx(2 / 3)}
    # The tiny box's IoU 0.25 is background; the tall box's 0.406 is in the ignored band.
    assert summary["below_bg"]["count"] == 1
    # Low-quality matches still give every box positives.
    assert summary["boxes_without_positive"] == 0
    assert all(int(row["num_positive_anchors"]) >= 1 for row in rows)


def test_anchor_stats_tables(anchor_report):
    summary = anchor_report[0].data
    coco = {r["bucket"].split()[0]: (r["boxes"], r["below_fg"]) for r in summary["by_coco_size"]}
    # Areas 1024 (medium: COCO's small is < 32^2), 256 (small), 1536 (medium).
    assert coco == {"small": (1, 1), "medium": (2, 1)}
    aspect = {r["bucket"]: (r["boxes"], r["below_fg"]) for r in summary["by_aspect_ratio"]}
    assert aspect == {"0.707-1.41": (2, 1), ">= 4": (1, 1)}
    sqrt_area = {r["bucket"]: (r["boxes"], r["below_fg"]) for r in summary["by_sqrt_area"]}
    assert sqrt_area == {"16-23 px": (1, 1), "32-45 px": (2, 1)}  # sqrt areas 32, 16, 39.2
    # Every positive anchor lies on P3: larger anchors (area >= 64^2) reach IoU <= 0.25.
    levels = summary["positives_per_level"]
    assert [r["level"] for r in levels] == ["p3", "p4", "p5", "p6", "p7"]
    assert levels[0]["share"] == 1.0 and all(r["positives"] == 0 for r in levels[1:])
    assert levels[0]["per_image"] == levels[0]["positives"] / 2


def test_anchor_stats_advice(anchor_report):
    report, output_dir, config_file, opts = anchor_report
    summary = report.data
    overrides = [item["override"] for item in summary["advice"]]
    # A first-level base size of 20 covers the 16 px box (20 x 20 anchor: IoU 256 / 400 = 0.64);
    # 25 does not (256 / 625 = 0.41). Ratio 6 covers the tall box.
    assert overrides == [
        ["MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES", "[20, 64, 128, 256, 512]"],
        ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0, 6.0]]"],
    ]
    assert (
        "100.0% of the 1 boxes smaller than the smallest anchor (32 px)"
        in (summary["advice"][0]["text"])
    )
    assert "all boxes 66.7% -> 33.3%" in summary["advice"][0]["text"]
    assert "12 anchors per location" in summary["advice"][1]["text"]
    assert json.loads((output_dir / "anchor_stats.json").read_text())["advice"] == json.loads(
        json.dumps(summary["advice"])
    )
    assert (output_dir / "anchor_stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The printed overrides work as KEY VALUE arguments, and do what the advice measured.
    for key, value in overrides:
        after = anchor_coverage_report(config_file, opts + [key, value], str(output_dir / key))
        assert f'    {key} "{value}"' not in after.text
        assert after.data["below_fg"]["count"] == 1


def test_anchor_stats_tool_prints_overrides(anchor_report, tmp_path):
    report, _, config_file, opts = anchor_report
    out = run_tool("anchor_stats", "--config-file", config_file, *opts, cwd=tmp_path)
    assert "3 boxes" in out and "2 boxes (66.7%)" in out
    assert '    MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES "[20, 64, 128, 256, 512]"' in out
    assert '    MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS "[[0.5, 1.0, 2.0, 6.0]]"' in out
    assert out.startswith(report.text + "\n")
    # By default the files go to output/anchor_stats/ of the working directory.
    written = tmp_path / "output" / "anchor_stats"
    assert out.endswith(
        f"wrote {', '.join(f'output/anchor_stats/anchor_stats.{e}' for e in ('png', 'csv', 'json'))}\n"
    )
    assert json.loads((written / "anchor_stats.json").read_text()) == json.loads(
        json.dumps(report.data)
    )
