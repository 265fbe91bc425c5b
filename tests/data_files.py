"""Tiny COCO-format datasets and bad image files, written into a test's tmp_path."""

import json
import os

import numpy as np
from PIL import Image


def write_image(path, size=(64, 48), boxes=(), color=(40, 40, 40), box_color=(230, 230, 230)):
    """A `size` (width, height) PNG or JPEG (by extension): flat `color`, with each [x, y, w, h]
    of `boxes` filled with `box_color`. Returns the path as a string."""
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = color
    for x, y, w, h in boxes:
        top, left = max(int(y), 0), max(int(x), 0)  # negative indices would wrap around
        pixels[top : max(int(y + h), 0), left : max(int(x + w), 0)] = box_color
    options = {"quality": 95} if str(path).endswith(".jpg") else {}
    Image.fromarray(pixels).save(path, **options)
    return str(path)


def truncate(path, keep=0.5):
    """Cut the file at `path` to a fraction `keep` of its bytes, as an interrupted copy does."""
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return str(path)


def coco_dict(images, annotations, category_ids=(1, 2, 3)):
    """A COCO json dict: `images` as (id, file_name, width, height), `annotations` as
    (id, image_id, category_id, [x, y, w, h])."""
    return {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "annotations": [
            {
                "id": a,
                "image_id": i,
                "category_id": c,
                "bbox": list(b),
                "area": float(b[2] * b[3]) if all(isinstance(v, (int, float)) for v in b) else 0,
                "iscrowd": 0,
            }
            for a, i, c, b in annotations
        ],
        "categories": [{"id": c, "name": f"class{c}"} for c in category_ids],
    }


def write_json(path, content):
    """Write `content` (a dict, or a str written as it is) to `path`; returns the path."""
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def write_coco_dataset(folder, boxes_per_image, size=(64, 64), category_ids=(1, 2, 3), ext="png"):
    """Images ``000.png`` ... in `folder`/images, each with its boxes drawn, and
    `folder`/train.json. `boxes_per_image[i]` lists (category_id, [x, y, w, h]) of image i (id
    i + 1). Returns (json_file, image_root)."""
    image_root = os.path.join(folder, "images")
    os.makedirs(image_root, exist_ok=True)
    images, annotations = [], []
    for index, boxes in enumerate(boxes_per_image):
        file_name = f"{index:03d}.{ext}"
        drawable = [b for _, b in boxes if _drawable(b, size)]
        write_image(os.path.join(image_root, file_name), size, drawable)
        images.append((index + 1, file_name, *size))
        for category_id, box in boxes:
            annotations.append((len(annotations) + 1, index + 1, category_id, box))
    content = coco_dict(images, annotations, category_ids)
    return write_json(os.path.join(folder, "train.json"), content), image_root


def _drawable(box, size):
    x, y, w, h = (float(v) if isinstance(v, (int, float)) else float("nan") for v in box)
    return np.isfinite([x, y, w, h]).all() and w > 0 and h > 0 and x < size[0] and y < size[1]
