"""RobustDatasetMapper and read_image_file: missing, truncated and non-image files are named;
grayscale, RGBA, palette, 16-bit and EXIF-rotated images are read correctly; a json size that
disagrees with the file is an error naming both. Every image is generated here."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as d2_utils
from detectron2.structures import BoxMode
from PIL import Image

from retina_plugin import add_retina_plugin_config
from retina_plugin.data import (
    ImageReadError,
    ImageSizeMismatchError,
    RobustDatasetMapper,
    read_image_file,
)
from retina_plugin.data.boxes import sanitize_boxes
from tests.data_files import truncate, write_image

BOX = [10, 5, 30, 20]  # x, y, w, h in the displayed 64 x 48 image


def mapper(is_train=True, alpha_background=(0, 0, 0)):
    """No augmentation: output pixels and boxes are the file's."""
    return RobustDatasetMapper(
        is_train, augmentations=[], image_format="BGR", alpha_background=alpha_background
    )


def record(file_name, width=64, height=48, boxes=(BOX,)):
    annotations = [
        {"bbox": list(b), "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0} for b in boxes
    ]
    return {"file_name": str(file_name), "image_id": 7, "width": width, "height": height,
            "annotations": annotations}  # fmt: skip


def save(pixels, path, **options):
    Image.fromarray(pixels).save(path, **options)
    return str(path)


# ------------------------------------------------------------------------------------------------
# Files that cannot be read
# ------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nowhere.png")
    with pytest.raises(FileNotFoundError) as error:
        mapper()(record(missing))
    assert str(error.value) == (
        f"Image file {missing!r} does not exist. Check the dataset's image_root and the image's "
        "'file_name' in the json."
    )


@pytest.mark.parametrize(
    "name, keep, reason",
    [
        ("cut.png", 0.5, "image file is truncated (OSError)"),
        ("cut.jpg", 0.5, "Truncated File Read (OSError)"),
    ],
)
def test_truncated_file(tmp_path, name, keep, reason):
    path = truncate(write_image(tmp_path / name, boxes=[BOX]), keep=keep)
    with pytest.raises(ImageReadError) as error:
        mapper()(record(path))
    assert str(error.value).startswith(f"Cannot read image {path!r}: {reason}")
    assert str(error.value).endswith(
        "The file is truncated, corrupt or not an image: replace it, or remove its entry from "
        "the json."
    )
    with pytest.raises(OSError) as d2_error:  # Detectron2's message does not name the file
        d2_utils.read_image(path, "BGR")
    assert path not in str(d2_error.value)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ImageReadError) as error:
        read_image_file(str(path))
    assert str(error.value) == (
        f"Cannot read image {str(path)!r}: PIL does not recognise it as an image "
        "(UnidentifiedImageError). The file is truncated, corrupt or not an image: replace it, "
        "or remove its entry from the json."
    )


def test_float_image_is_refused(tmp_path):
    path = save(np.full((4, 4), 0.5, dtype=np.float32), tmp_path / "float.tiff")
    with pytest.raises(ImageReadError) as error:
        read_image_file(path)
    assert str(error.value) == (
        f"Cannot read image {path!r}: its pixels are 32-bit floats (PIL mode 'F'), whose range "
        "is unknown. Convert it to an 8-bit image."
    )


# ------------------------------------------------------------------------------------------------
# Pixel formats
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain.png", "plain.jpg"])
def test_plain_rgb_equals_detectron2(tmp_path, name):
    path = write_image(tmp_path / name, boxes=[BOX], box_color=(200, 30, 90))
    image, stored_size = read_image_file(path, "BGR")
    np.testing.assert_array_equal(image, d2_utils.read_image(path, "BGR"))
    assert stored_size == (64, 48)
    ours, theirs = (
        mapper()(record(path)),
        DatasetMapper(True, augmentations=[], image_format="BGR")(record(path)),
    )
    assert torch.equal(ours["image"], theirs["image"])
    assert torch.equal(ours["instances"].gt_boxes.tensor, theirs["instances"].gt_boxes.tensor)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = save(np.full((48, 64), 77, dtype=np.uint8), tmp_path / "gray.png")
    image, _ = read_image_file(path, "BGR")
    assert image.shape == (48, 64, 3) and (image == 77).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 300, 257 * 100, 65535]], dtype=np.uint16)
    path = save(values, tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    image, _ = read_image_file(path, "BGR")
    assert image[0, :, 0].tolist() == [0, 1, 100, 255]  # v * 255 / 65535, rounded
    assert (image == image[..., :1]).all()
    # Detectron2 (PIL's convert) clips instead: everything above 255 turns white.
    assert d2_utils.read_image(path, "BGR")[0, :, 0].tolist() == [0, 255, 255, 255]


def test_rgba_is_composited_over_the_pixel_mean(tmp_path):
    # Transparent (hiding red), opaque green, half-transparent blue.
    pixels = np.array([[[255, 0, 0, 0], [0, 255, 0, 255], [0, 0, 255, 128]]], dtype=np.uint8)
    path = save(pixels, tmp_path / "alpha.png")
    cfg = get_cfg()
    add_retina_plugin_config(cfg)  # PIXEL_MEAN is BGR [103.53, 116.28, 123.675]
    background = RobustDatasetMapper(cfg, False).alpha_background
    assert background == (124, 116, 104)  # as R, G, B
    out = mapper(False, background)({"file_name": path, "image_id": 1})
    bgr = out["image"].permute(1, 2, 0).tolist()[0]
    # Transparent: the mean (Detectron2 pads with it); opaque: as is; 50%: a blend of the two.
    assert bgr == [[104, 116, 124], [0, 255, 0], [180, 58, 62]]
    # Detectron2 drops alpha: the hidden red shows.
    assert d2_utils.read_image(path, "BGR")[0, 0].tolist() == [0, 0, 255]


def test_palette_images(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 0, 255], [255, 0, 0]]], dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    path = tmp_path / "palette.png"
    palette.save(path)
    image, _ = read_image_file(str(path), "RGB")
    assert image.tolist() == rgb.tolist()
    # A palette entry marked transparent (PNG tRNS) shows the background.
    red_index = palette.getpixel((0, 0))
    palette.save(path, transparency=red_index)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    image, _ = read_image_file(str(path), "RGB", alpha_background=(1, 2, 3))
    assert image.tolist() == [[[1, 2, 3], [0, 0, 255], [1, 2, 3]]]


# ------------------------------------------------------------------------------------------------
# EXIF orientation and the json's size
# ------------------------------------------------------------------------------------------------


def exif_rotated_jpeg(path):
    """A JPEG stored rotated by 90 degrees (48 x 64) with EXIF orientation 6: shown upright it is
    64 x 48, dark, with a bright rectangle at BOX."""
    upright = np.full((48, 64, 3), 20, dtype=np.uint8)
    x, y, w, h = BOX
    upright[y : y + h, x : x + w] = 235
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    stored.save(path, quality=95, exif=exif)
    return str(path)


@pytest.mark.parametrize("json_size", [(64, 48), (48, 64)], ids=["displayed", "stored"])
def test_exif_rotated_jpeg_boxes_line_up(tmp_path, json_size):
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg")
    assert Image.open(path).size == (48, 64)
    out = mapper()(record(path, *json_size))
    image = out["image"].float().mean(dim=0)  # (H, W)
    assert image.shape == (48, 64)
    assert (out["width"], out["height"]) == (64, 48)  # the real size, whatever the json said
    (x0, y0, x1, y1), = out["instances"].gt_boxes.tensor.int().tolist()  # fmt: skip
    inside = torch.zeros_like(image, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    # JPEG blurs the edges by a pixel or two: compare the interior and the far exterior.
    assert image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].min() > 200
    assert image[~inside].median() < 40
    grown = torch.zeros_like(inside)
    grown[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
    assert image[~grown].max() < 60
    np.testing.assert_array_equal(read_image_file(path)[0], d2_utils.read_image(path, "BGR"))


def test_exif_rotated_jpeg_boxes_are_clipped_in_the_displayed_frame(tmp_path):
    """The json gives the stored size (48 x 64); the boxes lie in the displayed 64 x 48 image,
    as Detectron2 reads it. One box lies right of x = 48 (outside the stored frame), one crosses
    the displayed right edge: the first is kept, the second clipped at x = 64, not at 48."""
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg")
    right, crossing = [50, 30, 12, 10], [40, 2, 40, 8]  # x, y, w, h
    (sanitized,), counts = sanitize_boxes([record(path, 48, 64, [right, crossing])], "exif")
    assert [a["bbox"] for a in sanitized["annotations"]] == [right, [40.0, 2.0, 24.0, 8.0]]
    assert (counts.outside, counts.clipped) == (0, 1)
    out = mapper()(sanitized)
    assert out["instances"].gt_boxes.tensor.tolist() == [[50, 30, 62, 40], [40, 2, 64, 10]]
    # The same json on an upright file of the stored size: the first box is outside it.
    upright = save(np.full((64, 48, 3), 20, dtype=np.uint8), tmp_path / "upright.jpg")
    (sanitized,), counts = sanitize_boxes([record(upright, 48, 64, [right, crossing])], "plain")
    assert [a["bbox"] for a in sanitized["annotations"]] == [[40.0, 2.0, 8.0, 8.0]]
    assert (counts.outside, counts.clipped) == (1, 1)


def test_json_size_that_disagrees_with_the_file(tmp_path):
    path = write_image(tmp_path / "small.png", size=(64, 48))
    with pytest.raises(ImageSizeMismatchError) as error:
        mapper()(record(path, width=80, height=60))
    assert str(error.value) == (
        f"Image {path!r} (image id 7) is 64x48 pixels (width x height), but the json says 80x60. "
        "Set its 'width' and 'height' in the json to 64 and 48 if the boxes were drawn on this "
        "file, or replace the file with the image that was annotated."
    )
    assert isinstance(error.value, d2_utils.SizeMismatchError)  # Detectron2's type still works


# ------------------------------------------------------------------------------------------------
# Test mode, and errors that are not about the image
# ------------------------------------------------------------------------------------------------


def test_test_mode_drops_annotations_and_keeps_the_size(tmp_path):
    path = write_image(tmp_path / "a.png")
    out = mapper(is_train=False)(record(path))
    assert "annotations" not in out and "instances" not in out
    assert (out["width"], out["height"], tuple(out["image"].shape)) == (64, 48, (3, 48, 64))


def test_other_errors_get_a_note_naming_the_file(tmp_path):
    path = write_image(tmp_path / "a.png")
    broken = record(path)
    broken["annotations"][0]["bbox_mode"] = "not a mode"
    with pytest.raises(Exception) as error:
        mapper()(broken)
    assert f"retina-plugin: while loading image {path!r} (image id 7)" in getattr(
        error.value, "__notes__", []
    )
