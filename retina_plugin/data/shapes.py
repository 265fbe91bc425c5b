"""A synthetic, COCO-format dense-detection dataset ("shapes") that trains on a CPU in minutes.

Each image is drawn from its own random stream, seeded by (seed, split, image index), so a split
is byte-identical across runs and train and val never share an image. What makes it a detection
problem rather than a toy:

* 8 classes (``SHAPES_CLASSES``) drawn with uneven frequencies (``SHAPES_CLASS_WEIGHTS``);
* object sizes log-uniform from 12 px to 75% of the image side (about 14% under 16 px), aspect ratios from about 1:3.5 to
  3.5:1 (rectangles, ellipses, diamonds, triangles, crosses);
* overlaps: objects may cover up to half of the smaller box of another, and later objects occlude
  earlier ones;
* textured backgrounds (two-colour gradients plus stripes and/or low-frequency blobs), pixel noise
  and sometimes blur;
* unannotated clutter: lumpy blotches under the objects, lines and dots over them;
* one image in every 20 (5%) holds no objects.

Occlusion rule: an annotation's box is the tight box of the object's whole (amodal) shape, and its
``area`` the pixel count of that shape. An object of which less than 60% stays visible (occluded by
more than 40%) is dropped from the annotations; its visible remnant is left in the image as
clutter, since such a sliver cannot be told apart reliably.

Every object lies entirely inside the image, so every box does too. Boxes use COCO's
``[x, y, w, h]`` with the pixel-extent convention: the box covers pixels ``x .. x + w - 1``.
"""

import json
import logging
import os
import re
import shutil
import time
import zlib
from typing import Optional

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_CLASS_WEIGHTS",
    "SHAPES_MIN_IMAGE_SIZE",
    "default_shapes_root",
    "generate_shapes_split",
    "register_shapes_datasets",
]

SHAPES_CLASSES: list[str] = [
    "circle",
    "rectangle",
    "triangle",
    "ellipse",
    "star",
    "cross",
    "ring",
    "diamond",
]
# Uneven class frequencies, so that the classifier faces a class imbalance as on real data.
SHAPES_CLASS_WEIGHTS: list[float] = [0.22, 0.18, 0.14, 0.12, 0.10, 0.10, 0.08, 0.06]

# Bump when the drawing changes: cached splits written by another version are then regenerated.
_GENERATOR_VERSION = 2
_ANNOTATIONS = "annotations.json"
_IMAGES = "images"
_MARKER = "COMPLETE"

# Smallest image side: below 32 px the largest objects would be barely larger than the smallest.
SHAPES_MIN_IMAGE_SIZE = 32

_EMPTY_EVERY = 20  # one image in this many is empty
_MIN_OBJECT_SIZE = 12.0  # px, geometric mean of the box sides
_MAX_OBJECT_FRACTION = 0.75  # of the image side
_MAX_OVERLAP = 0.5  # intersection over the smaller box area allowed between two placed objects
_MIN_VISIBLE = 0.6  # objects with less of their shape visible are not annotated
_SHIFT = 4  # cv2 sub-pixel drawing: coordinates are fixed point with 4 fractional bits
_SCALE = 1 << _SHIFT

# log(w / h) ranges per class; ellipses exclude near-round ones so they are not circles.
_LOG_ASPECT = {
    "circle": (0.0, 0.0),
    "rectangle": (-np.log(3.5), np.log(3.5)),
    "triangle": (-np.log(1.7), np.log(1.7)),
    "ellipse": (np.log(1.6), np.log(3.5)),  # magnitude; the sign is drawn separately
    "star": (0.0, 0.0),
    "cross": (-np.log(1.35), np.log(1.35)),
    "ring": (0.0, 0.0),
    "diamond": (-np.log(2.0), np.log(2.0)),
}


def default_shapes_root() -> str:
    """The cache folder for generated splits: ``$RETINA_PLUGIN_DATASETS/shapes`` if that variable
    is set (like ``DETECTRON2_DATASETS``, it names the folder holding all datasets), else
    ``~/.cache/retina_plugin/shapes``."""
    datasets = os.environ.get("RETINA_PLUGIN_DATASETS")
    if datasets:
        return os.path.join(os.path.expanduser(datasets), "shapes")
    return os.path.join(os.path.expanduser("~"), ".cache", "retina_plugin", "shapes")


def _split_dirname(split: str, num_images: int, image_size: int, seed: int) -> str:
    return f"shapes_{split}-{num_images}x{image_size}-seed{seed}"


def _check_split_args(split: str, num_images: int, image_size: int, seed: int):
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_]+", split):
        raise ValueError(f"split = {split!r} must be a non-empty name of letters, digits or _.")
    if int(num_images) != num_images or num_images < 1:
        raise ValueError(f"num_images = {num_images} must be an integer >= 1.")
    if int(image_size) != image_size or image_size < SHAPES_MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size = {image_size} must be an integer >= {SHAPES_MIN_IMAGE_SIZE}."
        )
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed = {seed} must be an integer >= 0.")


def _split_rng(seed: int, split: str, purpose: int, *index: int) -> np.random.Generator:
    """The random stream of one split, for one purpose (0: an image, 1: the empty-image phase)."""
    # crc32 gives each split name a stable stream id (Python's hash() is salted per process).
    # `purpose` precedes the index because SeedSequence ignores trailing zeros: [s, t] seeds
    # the same stream as [s, t, 0].
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), purpose, *index])


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _SCALE).astype(np.int32)


def _fill_polygon_in_box(mask, unit_points, x0, y0, w, h):
    """Fill a polygon given in any coordinates, stretched so its extent is the pixel box."""
    pts = np.asarray(unit_points, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pts = (pts - lo) / np.maximum(hi - lo, 1e-9)
    # Pixel centres run from x0 to x0 + w - 1.
    pts = pts * np.array([w - 1, h - 1]) + np.array([x0, y0])
    cv2.fillPoly(mask, [_fixed(pts)], 1, lineType=cv2.LINE_8, shift=_SHIFT)


def _fill_ellipse_in_box(mask, x0, y0, w, h, value=1, scale=1.0):
    center = (x0 + (w - 1) / 2.0, y0 + (h - 1) / 2.0)
    axes = (max((w - 1) / 2.0 * scale, 0.5), max((h - 1) / 2.0 * scale, 0.5))
    cv2.ellipse(
        mask,
        tuple(int(v) for v in _fixed(center)),
        tuple(int(v) for v in _fixed(axes)),
        0,
        0,
        360,
        value,
        -1,
        cv2.LINE_8,
        _SHIFT,
    )


def _draw_shape(mask, name, x0, y0, w, h, rng):
    """Rasterise one object of class `name` into the uint8 `mask` within the given pixel box."""
    if name in ("circle", "ellipse"):
        _fill_ellipse_in_box(mask, x0, y0, w, h)
    elif name == "ring":
        _fill_ellipse_in_box(mask, x0, y0, w, h)
        # Keep the band at least ~2 px wide so small rings do not vanish into a circle outline.
        inner = min(rng.uniform(0.45, 0.65), 1.0 - 4.0 / max(w, h))
        if inner > 0.2:
            _fill_ellipse_in_box(mask, x0, y0, w, h, value=0, scale=inner)
    elif name == "rectangle":
        _fill_polygon_in_box(mask, [(0, 0), (1, 0), (1, 1), (0, 1)], x0, y0, w, h)
    elif name == "diamond":
        _fill_polygon_in_box(mask, [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)], x0, y0, w, h)
    elif name == "triangle":
        pts = np.array([(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)])
        # Point up, right, down or left: rotate the unit triangle by a multiple of 90 degrees.
        for _ in range(int(rng.integers(4))):
            pts = np.stack([1.0 - pts[:, 1], pts[:, 0]], axis=1)
        _fill_polygon_in_box(mask, pts, x0, y0, w, h)
    elif name == "star":
        inner = rng.uniform(0.38, 0.5)
        phase = rng.uniform(0, 2 * np.pi / 5)
        angles = phase + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        _fill_polygon_in_box(
            mask, np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1), x0, y0, w, h
        )
    elif name == "cross":
        t = rng.uniform(0.28, 0.4) / 2.0
        a, b = 0.5 - t, 0.5 + t
        pts = [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b)]
        _fill_polygon_in_box(mask, pts + [(0, a), (a, a)], x0, y0, w, h)
    else:
        raise ValueError(f"Unknown shape {name!r}.")


def _random_color(rng) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _background(rng, size: int) -> np.ndarray:
    """A float32 HxWx3 background: a two-colour gradient with stripes and/or blobs."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy)[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = _random_color(rng), _random_color(rng)
    img = (c0 * (1 - ramp) + c1 * ramp).astype(np.float32)
    kind = rng.random()
    if kind < 0.45:  # stripes
        period = rng.uniform(4, 32) / size
        phi = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * (np.cos(phi) * xx + np.sin(phi) * yy) / period)
        img += (wave[..., None] * rng.uniform(10, 45, size=3)).astype(np.float32)
    if kind > 0.3:  # low-frequency blobs: coarse noise upsampled
        cells = int(rng.integers(3, 9))
        coarse = rng.normal(0, 1, size=(cells, cells, 3)).astype(np.float32)
        blobs = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        img += blobs * np.float32(rng.uniform(15, 50))
    return img


def _blob_polygon(rng, cx, cy, radius) -> np.ndarray:
    """A smooth, lumpy outline. Random-radius polygons with few vertices look like stars and
    triangles, i.e. like unlabelled objects; low radial harmonics look like no class."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    amplitudes = rng.uniform(0.12, 0.25, size=3) * rng.choice([0.0, 1.0], size=3, p=[0.3, 0.7])
    amplitudes[int(rng.integers(1, 3))] = rng.uniform(0.15, 0.25)  # always lumpy, never round
    phases = rng.uniform(0, 2 * np.pi, size=3)
    radii = radius * (
        1.0 + sum(a * np.cos(k * angles + p) for k, a, p in zip((2, 3, 4), amplitudes, phases))
    )
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _draw_blotches(img, rng, size):
    """Unannotated lumpy blotches under the objects, of modest contrast."""
    for _ in range(int(rng.integers(0, 4))):
        pts = _blob_polygon(
            rng, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(3, 0.2 * size)
        )
        color = img[int(np.clip(pts[0, 1], 0, size - 1)), int(np.clip(pts[0, 0], 0, size - 1))]
        color = np.clip(color + rng.uniform(-70, 70, size=3), 0, 255)
        cv2.fillPoly(img, [_fixed(pts)], tuple(float(c) for c in color), cv2.LINE_8, _SHIFT)


def _draw_strokes(img, rng, size):
    """Unannotated lines, polylines and dots over the objects."""
    for _ in range(int(rng.integers(0, 5))):
        n = int(rng.integers(2, 5))
        pts = rng.uniform(-0.1 * size, 1.1 * size, size=(n, 2))
        color = tuple(float(c) for c in _random_color(rng))
        thickness = int(rng.integers(1, 3))
        cv2.polylines(img, [_fixed(pts)], False, color, thickness, cv2.LINE_AA, _SHIFT)
    # Specks of at most 3 px: larger dots rasterise as tiny plus signs, i.e. unlabelled crosses.
    for _ in range(int(rng.integers(0, 10))):
        center = tuple(int(v) for v in _fixed(rng.uniform(0, size, size=2)))
        radius = int(round(rng.uniform(0.5, 1.5) * _SCALE))
        color = tuple(float(c) for c in _random_color(rng))
        cv2.circle(img, center, radius, color, -1, cv2.LINE_8, _SHIFT)


def _sample_box(rng, name, size):
    """Width and height of one object of class `name` (floats, before rounding)."""
    lo, hi = _LOG_ASPECT[name]
    log_aspect = rng.uniform(lo, hi) if hi > lo else lo
    if name == "ellipse" and rng.random() < 0.5:
        log_aspect = -log_aspect
    scale = np.exp(rng.uniform(np.log(_MIN_OBJECT_SIZE), np.log(_MAX_OBJECT_FRACTION * size)))
    w, h = scale * np.exp(log_aspect / 2), scale * np.exp(-log_aspect / 2)
    # Keep the object inside the image (1 px margin), preserving its aspect ratio.
    fit = min(1.0, (size - 2) / w, (size - 2) / h)
    w, h = w * fit, h * fit
    # Thin objects of tiny boxes collapse to lines; give their short side at least 4 px.
    grow = max(1.0, 4.0 / min(w, h))
    return int(round(min(w * grow, size - 2))), int(round(min(h * grow, size - 2)))


def _overlap_too_large(box, boxes) -> bool:
    x0, y0, w, h = box
    for bx, by, bw, bh in boxes:
        iw = min(x0 + w, bx + bw) - max(x0, bx)
        ih = min(y0 + h, by + bh) - max(y0, by)
        if iw > 0 and ih > 0 and iw * ih > _MAX_OVERLAP * min(w * h, bw * bh):
            return True
    return False


def _paint_object(img, mask, rng, ys, xs):
    """Paint one object (mask region `ys, xs`) in a colour that stands out from what is beneath."""
    region = img[ys, xs]
    sub = mask[ys, xs].astype(bool)
    beneath = region[sub].mean(axis=0)
    color = _random_color(rng)
    # Contrast is what makes small objects findable at all; retry a few colours.
    for _ in range(8):
        if np.linalg.norm(color - beneath) >= 90:
            break
        color = _random_color(rng)
    h, w = sub.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    shade = (np.cos(theta) * xx + np.sin(theta) * yy) / max(h, w) * rng.uniform(-50, 50)
    fill = color[None, None, :] + shade[..., None]
    if rng.random() < 0.15:  # striped fill: shape, not colour, must identify the class
        period = rng.uniform(3, 8)
        stripes = (np.floor((xx + yy * rng.uniform(-1, 1)) / period) % 2)[..., None]
        fill = fill * (1 - stripes) + _random_color(rng)[None, None, :] * stripes
    if rng.random() < 0.3:  # dark outline
        inner = cv2.erode(sub.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        border = sub & ~inner
        fill[border] *= 0.45
    region[sub] = fill[sub]


def _render_image(rng, size: int, empty: bool = False):
    """Draw one image (with no objects if `empty`); return it as uint8 BGR and its annotations as
    (class index, box, area) tuples."""
    img = _background(rng, size)
    _draw_blotches(img, rng, size)

    num_objects = 0 if empty else int(min(1 + rng.poisson(3.0), 10))
    classes = rng.choice(len(SHAPES_CLASSES), size=num_objects, p=SHAPES_CLASS_WEIGHTS)
    owner = np.full((size, size), -1, dtype=np.int16)
    objects = []  # (class index, mask, x0, y0, w, h)
    placed = []
    for cls in classes:
        name = SHAPES_CLASSES[int(cls)]
        w, h = _sample_box(rng, name, size)
        for _ in range(10):
            x0 = int(rng.integers(1, size - w)) if size - w > 1 else 1
            y0 = int(rng.integers(1, size - h)) if size - h > 1 else 1
            if not _overlap_too_large((x0, y0, w, h), placed):
                break
        else:
            continue  # no room left for it
        mask = np.zeros((size, size), dtype=np.uint8)
        _draw_shape(mask, name, x0, y0, w, h, rng)
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        placed.append((x0, y0, w, h))
        by, bx = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
        _paint_object(img, mask, rng, by, bx)
        owner[mask.astype(bool)] = len(objects)
        objects.append((int(cls), mask, xs, ys))

    _draw_strokes(img, rng, size)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.5, 1.0))
    img += rng.normal(0, rng.uniform(2, 14), size=img.shape).astype(np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)

    annotations = []
    for i, (cls, _mask, xs, ys) in enumerate(objects):
        area = len(xs)
        if np.count_nonzero(owner == i) < _MIN_VISIBLE * area:
            continue  # occluded by more than 40%: see the module docstring
        x0, y0 = int(xs.min()), int(ys.min())
        box = [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]
        annotations.append((cls, box, float(area)))
    return img, annotations


# ------------------------------------------------------------------------------------------------
# Splits on disk
# ------------------------------------------------------------------------------------------------


def _write_split(folder, split, num_images, image_size, seed):
    image_dir = os.path.join(folder, _IMAGES)
    os.makedirs(image_dir)
    images, annotations = [], []
    start = time.perf_counter()
    report_every = max(1, num_images // 10)
    # Empty images at a fixed stride (random phase) rather than by a coin flip: even a small
    # split then holds its 5% of them, and which images are empty does not depend on num_images.
    empty_phase = int(_split_rng(seed, split, 1).integers(_EMPTY_EVERY))
    for index in range(num_images):
        empty = index % _EMPTY_EVERY == empty_phase
        img, anns = _render_image(_split_rng(seed, split, 0, index), image_size, empty)
        file_name = f"{index:06d}.png"
        if not cv2.imwrite(os.path.join(image_dir, file_name), img):
            raise OSError(f"Could not write {os.path.join(image_dir, file_name)}.")
        # COCO ids start at 1: COCOeval treats a matched ground-truth id of 0 as unmatched.
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for cls, box, area in anns:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": box,
                    "area": area,
                    "iscrowd": 0,
                }
            )
        if (index + 1) % report_every == 0 or index + 1 == num_images:
            logger.info(
                f"shapes_{split}: {index + 1}/{num_images} images "
                f"({time.perf_counter() - start:.1f} s)"
            )
    dataset = {
        "info": {
            "description": "retina_plugin synthetic shapes",
            "split": split,
            "seed": seed,
            "generator_version": _GENERATOR_VERSION,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPES_CLASSES)],
    }
    with open(os.path.join(folder, _ANNOTATIONS), "w", encoding="utf-8") as f:
        json.dump(dataset, f, separators=(",", ":"))
    # The marker is written last: its presence says everything before it was written whole.
    with open(os.path.join(folder, _MARKER), "w", encoding="utf-8") as f:
        json.dump({"generator_version": _GENERATOR_VERSION, "num_images": num_images}, f)


def _is_complete(folder: str, num_images: int) -> bool:
    """Whether `folder` holds a whole split: marker, json and every image it lists."""
    try:
        with open(os.path.join(folder, _MARKER), encoding="utf-8") as f:
            marker = json.load(f)
        if marker != {"generator_version": _GENERATOR_VERSION, "num_images": num_images}:
            return False
        with open(os.path.join(folder, _ANNOTATIONS), encoding="utf-8") as f:
            images = json.load(f)["images"]
        if len(images) != num_images:
            return False
        image_dir = os.path.join(folder, _IMAGES)
        return all(os.path.getsize(os.path.join(image_dir, im["file_name"])) > 0 for im in images)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_tmp_dirs(target: str):
    """Remove ``<target>.tmp-<pid>`` folders left by generations whose process has died."""
    parent, base = os.path.split(target)
    prefix = base + ".tmp-"
    for entry in os.listdir(parent):
        pid = entry[len(prefix) :]
        if entry.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
            logger.info(f"Removing {os.path.join(parent, entry)}, left by an interrupted run.")
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def generate_shapes_split(
    root: str, split: str, num_images: int, image_size: int = 128, seed: int = 0
) -> tuple[str, str]:
    """Generate one split of the shapes dataset under `root`, unless it is already there whole.

    The split lives in ``<root>/shapes_<split>-<num_images>x<image_size>-seed<seed>/``, holding
    ``images/*.png``, ``annotations.json`` (COCO format, category ids 1..K in the order of
    ``SHAPES_CLASSES``) and a ``COMPLETE`` marker. The images and json depend only on the
    arguments (and the generator version), byte for byte. Generation writes into
    ``<folder>.tmp-<pid>`` and renames it when done, so an interrupted run never leaves a folder
    that passes for whole; a folder without a valid marker, json or any listed image is removed
    and generated again.

    Args:
        root: the cache folder holding all splits (see ``default_shapes_root``).
        split: the split name, e.g. "train" or "val"; it also selects the random stream, so
            different splits never share images.
        num_images: number of images.
        image_size: side of the square images, in pixels (>= 32).
        seed: the base seed.

    Returns:
        ``(json_file, image_root)``, absolute paths.
    """
    _check_split_args(split, num_images, image_size, seed)
    num_images, image_size, seed = int(num_images), int(image_size), int(seed)
    root = os.path.abspath(os.path.expanduser(root))
    target = os.path.join(root, _split_dirname(split, num_images, image_size, seed))
    json_file, image_root = os.path.join(target, _ANNOTATIONS), os.path.join(target, _IMAGES)
    if _is_complete(target, num_images):
        return json_file, image_root

    os.makedirs(root, exist_ok=True)
    if os.path.exists(target):
        logger.warning(f"{target} is incomplete (an interrupted generation?): regenerating it.")
        shutil.rmtree(target)
    _remove_stale_tmp_dirs(target)
    tmp = f"{target}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    logger.info(
        f"Generating shapes_{split}: {num_images} images of {image_size}x{image_size} px, "
        f"seed {seed}, into {target}"
    )
    try:
        _write_split(tmp, split, num_images, image_size, seed)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process (e.g. another rank) finished the same split first: use its copy.
            if not _is_complete(target, num_images):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json_file, image_root


# ------------------------------------------------------------------------------------------------
# Detectron2 registration
# ------------------------------------------------------------------------------------------------


def _register_coco(name: str, json_file: str, image_root: str):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return  # already registered with these files
        DatasetCatalog.remove(name)
    # Metadata can exist without a dataset (MetadataCatalog.get creates it); its values would
    # clash with the new ones, and Metadata refuses to change a value.
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    metadata = {
        # Set now, not only when load_coco_json runs, so models and evaluators can read them
        # before the dataset is loaded; load_coco_json sets the same values again.
        "thing_classes": list(SHAPES_CLASSES),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(SHAPES_CLASSES))},
    }
    register_coco_instances(name, metadata, json_file, image_root)


def register_shapes_datasets(
    root: Optional[str] = None,
    num_train: int = 1500,
    num_val: int = 200,
    image_size: int = 128,
    seed: int = 0,
    names: tuple[str, str] = ("shapes_train", "shapes_val"),
) -> dict[str, tuple[str, str]]:
    """Generate (if missing) and register the shapes train and val splits with Detectron2.

    Generation is eager but cached, so ``MetadataCatalog.get(name).json_file`` exists as soon as
    this returns, as ``COCOEvaluator`` needs; with the splits cached, a call only checks files.
    The datasets are registered with ``register_coco_instances``, so they load through
    ``load_coco_json`` (contiguous category ids 0..K-1) and evaluate with ``COCOEvaluator``.
    Calling again with the same arguments is a no-op; with other arguments the names are
    re-registered to the new files.

    Args:
        root: the cache folder; ``default_shapes_root()`` if None.
        num_train, num_val: number of images of each split.
        image_size: side of the square images, in pixels.
        seed: the base seed; train and val use different random streams of it.
        names: the dataset names for the train and val splits.

    Returns:
        ``{name: (json_file, image_root)}`` for both splits.
    """
    root = default_shapes_root() if root is None else root
    train_name, val_name = names
    if train_name == val_name:
        raise ValueError(f"names = {names}: the train and val names must differ.")
    registered = {}
    for name, split, num_images in ((train_name, "train", num_train), (val_name, "val", num_val)):
        json_file, image_root = generate_shapes_split(root, split, num_images, image_size, seed)
        _register_coco(name, json_file, image_root)
        registered[name] = (json_file, image_root)
    return registered


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Generate the shapes dataset splits.")
    parser.add_argument("--root", default=None, help="cache folder (default: see README)")
    parser.add_argument("--num-train", type=int, default=1500)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = default_shapes_root() if args.root is None else args.root
    for split, n in (("train", args.num_train), ("val", args.num_val)):
        print(*generate_shapes_split(root, split, n, args.image_size, args.seed))
