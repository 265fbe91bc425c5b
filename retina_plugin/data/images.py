"""Read a dataset's image file: every failure names the file, and unusual pixel formats are
converted to 8 bits rather than mangled.

Detectron2's ``read_image`` raises PIL's errors, which do not name the file ("image file is
truncated"), and converts with PIL's ``Image.convert``, which clips 16-bit pixels to 255 (so a
16-bit PNG turns almost white) and drops the alpha channel, exposing whatever colour hides under
transparent pixels. Here:

* 16-bit grayscale (PIL modes ``I;16*``, and ``I`` as PNG decodes it) is scaled: 65535 -> 255;
* transparent pixels (RGBA, LA, PA, and palette or RGB images with a transparent colour) are
  composited over a fixed background colour; ``RobustDatasetMapper`` uses ``MODEL.PIXEL_MEAN``,
  which is what Detectron2 pads images with, so transparent areas look like padding;
* EXIF orientation is applied as Detectron2 applies it, and the size before it is returned too,
  so that a json written with the stored (unrotated) size can be recognised.
"""

import logging
from typing import Optional

import numpy as np
from detectron2.data import detection_utils
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_first_n
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "ImageSizeMismatchError",
    "read_image_file",
    "check_image_size",
    "displayed_size",
]

logger = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageReadError(OSError):
    """An image file that exists but cannot be decoded; the message names the file."""


class ImageSizeMismatchError(detection_utils.SizeMismatchError):
    """An image whose size differs from the json's ``width`` / ``height``."""


def read_image_file(
    file_name: str, format: Optional[str] = "BGR", alpha_background=(0, 0, 0)
) -> tuple[np.ndarray, tuple[int, int]]:
    """
    Read `file_name` as Detectron2's ``read_image(file_name, format)`` does (EXIF orientation
    applied; an HWC uint8 array in `format`), handling 16-bit and transparent images as the
    module docstring says.

    Args:
        file_name: the image file.
        format: "BGR", "RGB", "L" or any format of Detectron2's ``read_image``.
        alpha_background: the (R, G, B) colour, 0-255, under transparent pixels.

    Returns:
        the image, and its (width, height) as stored in the file, before the EXIF rotation.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: it cannot be decoded (truncated, corrupt, not an image, a pixel format
            with no known range).
    """
    image = _open_fully(file_name)
    stored_size = image.size
    image = detection_utils._apply_exif_orientation(image)  # exactly as read_image
    try:
        image = _to_eight_bits(image, file_name, alpha_background)
        return detection_utils.convert_PIL_to_numpy(image, format), stored_size
    except (OSError, ValueError) as error:
        if isinstance(error, ImageReadError):
            raise
        raise ImageReadError(
            f"Cannot convert image {file_name!r} (PIL mode {image.mode!r}) to {format}: {error}."
        ) from None


# EXIF orientations that turn the image by 90 degrees (Detectron2's reader transposes them).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def displayed_size(file_name: str, json_size: tuple) -> tuple:
    """
    The (width, height) in which the boxes of image `file_name` lie when the json gives
    `json_size`: Detectron2's reader applies the EXIF orientation, so for a file whose EXIF turns
    it by 90 degrees and whose json gives its stored size, the turned size; else `json_size`.
    Reads the file's header only; a file that cannot be read keeps `json_size` (the mapper
    reports it when it reads the image).
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            stored, orientation = image.size, image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - any unreadable file: reported by the mapper, named
        return json_size
    if tuple(json_size) == stored and orientation in _TRANSPOSING_ORIENTATIONS:
        return stored[1], stored[0]
    return json_size


def _open_fully(file_name: str) -> Image.Image:
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            # PIL decodes lazily; decode now, so a truncated file fails here, named.
            image.load()
            return image
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Image file {file_name!r} does not exist. Check the dataset's image_root and the "
            "image's 'file_name' in the json."
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # PIL's own message for this one names a file object, not the path.
        reason = (
            "PIL does not recognise it as an image"
            if isinstance(error, UnidentifiedImageError)
            else str(error)
        )
        raise ImageReadError(
            f"Cannot read image {file_name!r}: {reason} ({type(error).__name__}). The file is "
            "truncated, corrupt or not an image: replace it, or remove its entry from the json."
        ) from None


def _to_eight_bits(image: Image.Image, file_name: str, alpha_background) -> Image.Image:
    """An 8-bit PIL image (modes L, RGB, P, CMYK, ...) that ``Image.convert`` handles exactly."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Scale the full 16-bit range, rounding: v * 255 / 65535 = v / 257. Mode "I" is how
        # some PIL versions decode 16-bit PNGs; larger values cannot come from a PNG.
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8))
    if image.mode == "F":
        raise ImageReadError(
            f"Cannot read image {file_name!r}: its pixels are 32-bit floats (PIL mode 'F'), "
            "whose range is unknown. Convert it to an 8-bit image."
        )
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*(int(c) for c in alpha_background), 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


def check_image_size(dataset_dict: dict, image_size: tuple[int, int], stored_size):
    """
    Raise ``ImageSizeMismatchError`` unless the ``width`` x ``height`` of `dataset_dict` (the
    json's) equal `image_size` (the decoded, EXIF-rotated image's (width, height)). A json size
    equal to `stored_size`, the size before the EXIF rotation, is accepted with a warning, and
    the record's size is set to the rotated one: its boxes are taken in the rotated frame, the
    frame the image is trained and shown in. Missing sizes are filled in, as Detectron2 does.
    """
    width, height = image_size
    expected = (dataset_dict.get("width", width), dataset_dict.get("height", height))
    if expected != image_size:
        file_name = dataset_dict.get("file_name")
        if expected != tuple(stored_size):
            raise ImageSizeMismatchError(
                f"Image {file_name!r} (image id {dataset_dict.get('image_id')!r}) is {width}x"
                f"{height} pixels (width x height), but the json says {expected[0]}x"
                f"{expected[1]}. Set its 'width' and 'height' in the json to {width} and "
                f"{height} if the boxes were drawn on this file, or replace the file with the "
                "image that was annotated."
            )
        log_first_n(
            logging.WARNING,
            f"Image {file_name!r}: the json gives its stored size {expected[0]}x{expected[1]}; "
            f"its EXIF orientation makes it {width}x{height}. Using {width}x{height}, with the "
            "boxes in that (rotated) frame.",
            n=10,
            name=__name__,
        )
    dataset_dict["width"], dataset_dict["height"] = width, height
