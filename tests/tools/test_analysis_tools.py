"""tools/anchor_stats.py and tools/loss_cdf.py on hand-made boxes, logits and a tiny model."""

import csv
import json
import math

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from tests.utils import tiny_config, unregister_datasets
from tools import anchor_stats, loss_cdf

IMAGE_SIZE = 128
# COCO [x, y, w, h] boxes, category 1-3, per image. With tiny_config's anchors (sizes 32 * 2^(i/3)
# on P3 at stride 8, offset 0, ratios h/w 0.5 / 1 / 2; 64.. on P4 and up):
BOX_EQUAL_TO_ANCHOR = [0, 0, 32, 32, 1]  # the 32 x 32 anchor centred at (16, 16): IoU 1
BOX_TINY = [32, 32, 16, 16, 2]  # inside a 32 x 32 anchor at best: IoU 16^2 / 32^2 = 0.25
BOX_TALL = [24, 16, 16, 96, 3]  # h/w = 6, centred on the grid point (32, 64)
TINY_IMAGES = [[BOX_EQUAL_TO_ANCHOR, BOX_TINY], [BOX_TALL]]


def tall_box_best_iou() -> float:
    """The tall box's best anchor: size s = 32 * 2^(1/3), h/w = 2 (w = s / sqrt2, h = s * sqrt2),
    centred on the box, contains its width and lies inside its height."""
    size = 32 * 2 ** (1 / 3)
    width, height = size / 2**0.5, size * 2**0.5
    intersection = 16 * height
    return intersection / (16 * 96 + width * height - intersection)


def write_coco_dataset(root, images) -> tuple[str, str]:
    """A COCO json and 128 x 128 PNGs for `images` (lists of [x, y, w, h, category_id])."""
    image_root = root / "images"
    image_root.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": i, "name": f"class{i}"} for i in (1, 2, 3)]
    rng = np.random.default_rng(0)
    for image_id, boxes in enumerate(images, start=1):
        file_name = f"{image_id:03d}.png"
        pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        cv2.imwrite(str(image_root / file_name), pixels)
        coco["images"].append(
            {"id": image_id, "file_name": file_name, "height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        for x, y, w, h, category in boxes:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "category_id": category,
                    "iscrowd": 0,
                }
            )
    json_file = root / "train.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(image_root)


def tiny_setup(tmp_path, name: str) -> tuple[str, list[str]]:
    """tiny_config written as a YAML file, and the KEY VALUE list that registers the dataset."""
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(tiny_config().dump())
    json_file, image_root = write_coco_dataset(tmp_path / "data", TINY_IMAGES)
    opts = [
        "DATASETS.FOCAL_RETINA.COCO", str([[name, json_file, image_root]]),
        "DATASETS.TRAIN", f"('{name}',)",
        "DATASETS.TEST", f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN", f"({IMAGE_SIZE},)",
        "INPUT.MAX_SIZE_TRAIN", str(IMAGE_SIZE),
        "INPUT.MIN_SIZE_TEST", str(IMAGE_SIZE),
        "INPUT.MAX_SIZE_TEST", str(IMAGE_SIZE),
        "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    return str(config_file), opts


def test_iou_bands():
    assert anchor_stats.iou_bands([0.4, 0.5], [0, -1, 1]) == (0.4, 0.5)
    assert anchor_stats.iou_bands([0.5], [0, 1]) == (0.5, 0.5)
    assert anchor_stats.iou_bands([0.3, 0.7], [0, -1, 1]) == (0.3, 0.7)


@pytest.fixture(scope="module")
def anchor_report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("anchor_stats")
    config_file, opts = tiny_setup(tmp_path, "anchor_stats_tiny")
    output_dir = tmp_path / "out"
    argv = ["--config-file", config_file, "--output-dir", str(output_dir), *opts]
    yield anchor_stats.main(argv), output_dir, config_file, opts
    # A shuffled test order may set this fixture up again: the name must be free then.
    unregister_datasets("anchor_stats_tiny")


def test_anchor_stats_best_ious_by_hand(anchor_report):
    summary, output_dir, _, _ = anchor_report
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
    summary = anchor_report[0]
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


def test_anchor_stats_advice(anchor_report, capsys):
    summary, output_dir, config_file, opts = anchor_report
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
        argv = ["--config-file", config_file, "--output-dir", str(output_dir / key), *opts]
        capsys.readouterr()
        after = anchor_stats.main(argv + [key, value])
        assert f'    {key} "{value}"' not in capsys.readouterr().out
        assert after["below_fg"]["count"] == 1


def test_anchor_stats_report_prints_overrides(anchor_report, capsys):
    _, output_dir, config_file, opts = anchor_report
    anchor_stats.main(["--config-file", config_file, "--output-dir", str(output_dir), *opts])
    out = capsys.readouterr().out
    assert "3 boxes" in out and "2 boxes (66.7%)" in out
    assert '    MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES "[20, 64, 128, 256, 512]"' in out
    assert '    MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS "[[0.5, 1.0, 2.0, 6.0]]"' in out


def test_cumulative_loss_by_hand():
    cumulative = loss_cdf.cumulative_normalised_loss(torch.tensor([4.0, 1.0, 3.0, 2.0]))
    assert cumulative.tolist() == pytest.approx([0.1, 0.3, 0.6, 1.0])
    fractions = torch.tensor([0.0, 0.25, 0.5, 0.74, 0.75, 0.9, 1.0])
    assert loss_cdf.curve_at(cumulative, fractions).tolist() == pytest.approx(
        [0.0, 0.1, 0.3, 0.3, 0.6, 0.6, 1.0]
    )
    assert loss_cdf.hardest_share(cumulative, 0.25) == pytest.approx(0.4)
    assert loss_cdf.hardest_share(cumulative, 0.5) == pytest.approx(0.7)


def test_split_samples():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    labels = torch.tensor([0, 2, -1, 1])  # class 0, background, ignored, class 1
    positives, negatives = loss_cdf.split_samples(logits, labels)
    assert positives.tolist() == [1.0, 8.0]
    assert negatives.tolist() == [2.0, 3.0, 4.0, 7.0]


def test_loss_cdfs_by_hand():
    # Positives at p = 0.5 and 0.75; negatives at p = 0.75 (hard) and 0.25 (easy).
    positives = torch.tensor([0.0, math.log(3)])
    negatives = torch.tensor([math.log(3), -math.log(3)])
    curves = loss_cdf.loss_cdfs(positives, negatives, gammas=(0.0, 2.0))
    # FL = -(1 - p_t)^gamma log(p_t); the easier sample's share comes first.
    easy, hard = math.log(4 / 3), math.log(2)
    assert curves[("positive", 0.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    easy, hard = 0.25**2 * math.log(4 / 3), 0.5**2 * math.log(2)
    assert curves[("positive", 2.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    easy, hard = math.log(4 / 3), math.log(4)
    assert curves[("negative", 0.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    easy, hard = 0.25**2 * math.log(4 / 3), 0.75**2 * math.log(4)
    assert curves[("negative", 2.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    # gamma = 2 moves the loss onto the hard negative: 97.7% of it, against 82.8% for CE.
    assert loss_cdf.hardest_share(curves[("negative", 2.0)], 0.5) == pytest.approx(0.9775, abs=1e-4)
    assert loss_cdf.hardest_share(curves[("negative", 0.0)], 0.5) == pytest.approx(0.8281, abs=1e-4)


def test_loss_cdf_end_to_end(tmp_path, capsys):
    config_file, opts = tiny_setup(tmp_path, "loss_cdf_tiny")
    # An untrained model, checkpointed: its head starts at the prior pi = 0.01 for every logit.
    torch.manual_seed(0)
    weights = tmp_path / "untrained.pth"
    torch.save({"model": build_model(tiny_config()).state_dict()}, weights)
    output = tmp_path / "figure" / "cdf.png"
    argv = ["--config-file", config_file, "--output", str(output), "--points", "10"]
    rows = loss_cdf.main(argv + ["--batch-size", "2", *opts, "MODEL.WEIGHTS", str(weights)])

    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "figure" / "cdf.csv") as f:
        table = list(csv.reader(f))
    kinds = [f"{k}_gamma={g}" for k in ("positive", "negative") for g in ("0", "0.5", "1", "2")]
    assert table[0] == ["fraction"] + kinds
    assert len(table) == 12 and table[6][0] == "0.5000"
    values = np.array([[float(x) for x in row[1:]] for row in table[1:]])
    assert (values[0] == 0).all() and values[-1] == pytest.approx(1.0)
    assert (np.diff(values, axis=0) >= 0).all()
    # With all logits near the prior's bias, every sample of a kind has about the same loss:
    # the curves are close to the diagonal, the hardest 10% of negatives carry about 10%.
    assert values[5] == pytest.approx(0.5, abs=0.02)  # 0.485-0.499 since the 2026-12-02 redesign
    assert [r["gamma"] for r in rows] == [0.0, 0.5, 1.0, 2.0]
    assert rows[0]["negative_hardest_10%"] == pytest.approx(0.1, abs=0.01)
    out = capsys.readouterr().out
    assert "2 images:" in out and "negatives: top 10%" in out
    num_negatives = int(out.split(" positive and ")[1].split()[0])

    # A uniform subset of the negatives: about --max-negatives of them, the same curves.
    subset_rows = loss_cdf.main(
        argv + ["--max-negatives", "2000", *opts, "MODEL.WEIGHTS", str(weights)]
    )
    subset = int(capsys.readouterr().out.split(" positive and ")[1].split()[0])
    assert num_negatives > 15000 and 1700 < subset < 2300
    assert subset_rows[0]["negative_hardest_10%"] == pytest.approx(0.1, abs=0.02)
