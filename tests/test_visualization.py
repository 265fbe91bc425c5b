"""The pictures of retina_plugin/visualization.py, checked pixel by pixel on a plain image: the
ground-truth panel beside the predictions, the caption bands, and the best few predictions drawn
muted when none reaches the threshold."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from detectron2.structures import Boxes, BoxMode, Instances

from retina_plugin.visualization import (
    GROUND_TRUTH_CAPTION,
    MUTED_COLOR,
    add_caption,
    draw_detections,
    prediction_caption,
    save_dataset_visualizations,
    select_predictions,
)

HEIGHT, WIDTH = 400, 600  # longer side >= 512: drawn at scale 1, boxes at their coordinates
BACKGROUND = (30, 60, 90)
BAND = max(24, WIDTH // 16)  # add_caption's band above a panel this wide
METADATA = Metadata(name="test_visualization", thing_classes=["circle", "square"])
# Four boxes apart from each other; scores in the order of the boxes.
BOXES = [[40, 40, 160, 140], [220, 40, 360, 150], [400, 60, 560, 200], [60, 240, 200, 360]]


def _image():
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    return image


def _instances(scores):
    instances = Instances((HEIGHT, WIDTH))
    instances.pred_boxes = Boxes(torch.tensor(BOXES, dtype=torch.float32))
    instances.scores = torch.tensor(scores)
    instances.pred_classes = torch.tensor([0, 1, 0, 1])
    return instances


def _bottom_edge(panel, box):
    """The pixels of `panel` (below its band) along the bottom edge of `box` (XYXY), corners
    and the label at the top-left kept out: (n, 3) int, the row with the most change."""
    x0, _, x1, y1 = (int(v) for v in box)
    rows = panel[BAND + y1 - 1 : BAND + y1 + 2, x0 + 10 : x1 - 10].astype(int)
    change = np.abs(rows - BACKGROUND).sum(axis=(1, 2))
    return rows[int(np.argmax(change))]


def _changed(pixels):
    """The fraction of `pixels` that differ from the background."""
    return float((np.abs(pixels - BACKGROUND).sum(axis=1) > 30).mean())


def _muted(pixels):
    """The fraction of `pixels` that are exactly the muted grey."""
    return float((pixels == np.round(np.array(MUTED_COLOR) * 255)).all(axis=1).mean())


@pytest.fixture(autouse=True)
def seeded_colors():
    """Detectron2's Visualizer picks the colours of boxes at random: the same ones every run."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def test_prediction_captions():
    assert prediction_caption(0.5, 4, 4) == "score >= 0.50"
    assert prediction_caption(0.5, 0, 3) == "none >= 0.50; best 3 shown"
    assert prediction_caption(0.25, 0, 1) == "none >= 0.25; best 1 shown"
    assert prediction_caption(0.5, 0, 0) == "none >= 0.50; no detections"


def test_select_predictions():
    shown, passed = select_predictions(_instances([0.9, 0.2, 0.6, 0.05]), 0.5)
    assert passed and shown.scores.tolist() == pytest.approx([0.9, 0.6])
    shown, passed = select_predictions(_instances([0.3, 0.2, 0.4, 0.05]), 0.5)
    assert not passed and shown.scores.tolist() == pytest.approx([0.4, 0.3, 0.2])
    shown, passed = select_predictions(_instances([0.3, 0.2, 0.4, 0.05])[:0], 0.5)
    assert not passed and len(shown) == 0


def test_caption_band():
    panel = _image()
    captioned = add_caption(panel, "score >= 0.50")
    assert captioned.shape == (HEIGHT + BAND, WIDTH, 3)
    assert (captioned[BAND:] == panel).all()
    band = captioned[:BAND].astype(int)
    text = (band > 200).all(axis=2)  # white text on the dark band
    assert 0.01 < text.mean() < 0.2
    assert text[:, :200].any() and not text[:, 300:].any()  # written from the left, short
    assert not (band == BACKGROUND).all(axis=2).any()  # the band is not the image
    other = add_caption(panel, "none >= 0.50; best 3 shown")[:BAND]
    assert (other > 200).all(axis=2)[:, 300:].any()  # a longer caption reaches further


def test_ground_truth_beside_predictions():
    record = {
        "file_name": "plain.png",
        "height": HEIGHT,
        "width": WIDTH,
        "annotations": [
            {"bbox": [100, 80, 200, 160], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1}
        ],
    }
    picture = draw_detections(_image(), _instances([0.9, 0.2, 0.1, 0.05]), METADATA, 0.5, record)
    assert picture.shape == (HEIGHT + BAND, 2 * WIDTH, 3)
    ground_truth, predictions = picture[:, :WIDTH], picture[:, WIDTH:]
    gt_box = [100, 80, 300, 240]
    assert _changed(_bottom_edge(ground_truth, gt_box)) > 0.9
    # The ground truth is drawn in its panel only; the predictions panel shows the image there.
    assert _changed(_bottom_edge(predictions, gt_box)) == 0
    assert (ground_truth[:BAND] == add_caption(_image(), GROUND_TRUTH_CAPTION)[:BAND]).all()
    assert (predictions[:BAND] == add_caption(_image(), "score >= 0.50")[:BAND]).all()


def test_without_ground_truth_one_panel_enlarged():
    small = _image()[:64, :96]  # drawn with its longer side at 512 px
    instances = _instances([0.9, 0.2, 0.1, 0.05])[:0]
    picture = draw_detections(small, instances, METADATA, 0.5)
    assert picture.shape == (max(24, 512 // 16) + 64 * 512 // 96, 512, 3)


def test_best_three_muted_when_none_passes():
    picture = draw_detections(_image(), _instances([0.3, 0.2, 0.4, 0.05]), METADATA, 0.5)
    assert picture.shape == (HEIGHT + BAND, WIDTH, 3)
    for box in BOXES[:3]:  # dashed: gaps in the edge, most of the rest exactly grey
        edge = _bottom_edge(picture, box)
        assert 0.5 < _changed(edge) < 0.9 and _muted(edge) > 0.5
    assert _changed(_bottom_edge(picture, BOXES[3])) == 0  # the 4th best is not drawn
    caption = add_caption(_image(), "none >= 0.50; best 3 shown")[:BAND]
    assert (picture[:BAND] == caption).all()


def test_no_muted_boxes_when_some_pass():
    picture = draw_detections(_image(), _instances([0.3, 0.2, 0.7, 0.05]), METADATA, 0.5)
    drawn = _bottom_edge(picture, BOXES[2])
    assert _changed(drawn) > 0.95 and _muted(drawn) == 0  # solid, in a class colour
    for box in (BOXES[0], BOXES[1], BOXES[3]):
        assert _changed(_bottom_edge(picture, box)) == 0
    assert (picture[:BAND] == add_caption(_image(), "score >= 0.50")[:BAND]).all()


def test_dataset_pictures_after_evaluation(tiny_cfg, tmp_path):
    """save_dataset_visualizations (the pictures written after the final evaluation) on an
    untrained model: ground truth | predictions, the best 3 muted."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.modeling import build_model

    file_name = str(tmp_path / "plain.png")
    cv2.imwrite(file_name, _image()[:, :, ::-1])
    record = {
        "file_name": file_name,
        "image_id": 0,
        "height": HEIGHT,
        "width": WIDTH,
        "annotations": [
            {"bbox": [100, 80, 200, 160], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2}
        ],
    }
    DatasetCatalog.register("vis_plain", lambda: [record])
    MetadataCatalog.get("vis_plain").set(thing_classes=["a", "b", "c"])
    cfg = tiny_cfg
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # random weights score about the prior, 0.01
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 200, 300
    cfg.TEST.FOCAL_RETINA.NUM_VIS_IMAGES = 1
    model = build_model(cfg)
    (path,) = save_dataset_visualizations(cfg, model, "vis_plain", str(tmp_path / "vis"))
    picture = cv2.imread(path)[:, :, ::-1]
    assert path == str(tmp_path / "vis" / "plain.png")
    assert picture.shape == (HEIGHT + BAND, 2 * WIDTH, 3)
    assert _changed(_bottom_edge(picture[:, :WIDTH], [100, 80, 300, 240])) > 0.9
    assert (picture[BAND:, WIDTH:] == np.round(np.array(MUTED_COLOR) * 255)).all(axis=2).sum() > 200
    assert (
        picture[:BAND, WIDTH:] == add_caption(_image(), "none >= 0.50; best 3 shown")[:BAND]
    ).all()
