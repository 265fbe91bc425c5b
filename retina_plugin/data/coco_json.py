"""Load a COCO-format json with Detectron2's ``load_coco_json``, with errors that say what is
wrong and where.

Detectron2 reports a broken json with a bare ``KeyError``, an ``assert`` or a JSON decoding error
that does not name the file. Here the json is parsed once, by ``load_coco_json`` itself; only when
that fails is the file read again, to find and name the problem (the run stops anyway, so the
second parse costs nothing that matters, and a good json is never parsed twice).
"""

import collections
import contextlib
import json
import logging
import os
from typing import Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "check_unique_image_ids",
    "CocoJsonError",
    "DatasetLoadError",
    "find_coco_json_problem",
    "load_checked_coco_json",
    "naming_the_dataset",
]

logger = logging.getLogger(__name__)

# The keys without which Detectron2 cannot use an entry. "bbox" is not required by
# load_coco_json, but an annotation without one crashes the data loader later.
_REQUIRED_KEYS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
_MAX_LISTED = 10


class CocoJsonError(ValueError):
    """A COCO json that cannot be loaded as it is; the message names the file and the entry."""


class DatasetLoadError(ValueError):
    """A registered dataset that failed to load; the message names it, its json and the fault."""


# What a dataset's loading function raises on a broken file (Detectron2's load_coco_json and
# pycocotools: JSON errors, missing keys, asserts on duplicate ids, a missing file).
_LOAD_ERRORS = (json.JSONDecodeError, UnicodeDecodeError, KeyError, AssertionError, TypeError,
                IndexError, ValueError, OSError)  # fmt: skip


@contextlib.contextmanager
def naming_the_dataset(name: str):
    """
    Re-raise an error of loading dataset `name` (any registered function: Detectron2's
    ``register_coco_instances``, one's own ``DatasetCatalog.register``) as
    :class:`DatasetLoadError` naming the dataset, its json file where Detectron2's metadata
    records one, and the fault: for malformed JSON the line and column; for a json that parses,
    the checks of :func:`find_coco_json_problem` (which then reads it once more: the run is
    stopping). The plug-in's own errors, which name all that already, pass unchanged.
    """
    try:
        yield
    except (CocoJsonError, DatasetLoadError):
        raise
    except _LOAD_ERRORS as error:
        if name not in DatasetCatalog:
            raise  # Detectron2's "not registered" error lists the registered datasets
        raise _load_error(name, error) from error


def _load_error(name: str, error: Exception) -> DatasetLoadError:
    json_file = MetadataCatalog.get(name).get("json_file") if name in MetadataCatalog else None
    where = f"dataset {name!r}" + (f" from {json_file}" if json_file else "")
    if isinstance(error, json.JSONDecodeError):
        detail = (
            f"{json_file or 'its json'} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}"
        )
    else:
        detail = None
        if json_file and os.path.isfile(json_file):
            with contextlib.suppress(OSError, ValueError):
                detail = find_coco_json_problem(_read_json(json_file), json_file)
        detail = (detail or f"{type(error).__name__}: {error}").rstrip(".")
    return DatasetLoadError(f"Could not load {where}: {detail}.")


def check_unique_image_ids(dataset_name: str, num_images: int):
    """
    Raise :class:`DatasetLoadError` if the json of dataset `dataset_name` (its metadata's
    ``json_file``), loaded as `num_images` records, lists an image id more than once:
    pycocotools keeps one image per id and gives it the annotations of all of them, so boxes
    would be drawn on the wrong picture. A good json is not parsed again: its ``"file_name"``
    keys are counted (a byte scan), and only more of them than records means a parse.
    """
    json_file = MetadataCatalog.get(dataset_name).get("json_file")
    if not json_file or not os.path.isfile(json_file):
        return
    if _count(json_file, b'"file_name"') <= num_images:
        return
    try:
        images = _read_json(json_file)["images"]
        counts = collections.Counter(image["id"] for image in images)
    except (OSError, ValueError, TypeError, KeyError):  # not COCO: not ours to judge
        return
    duplicates = [image_id for image_id, count in counts.items() if count > 1]
    if duplicates:
        raise DatasetLoadError(
            f"Could not load dataset {dataset_name!r} from {json_file}: image ids must be "
            f"unique, but {len(duplicates)} ids occur more than once: "
            f"{_listed(duplicates)}. pycocotools keeps one image per id, with the "
            "annotations of all of them. Give every image its own id."
        )


def _count(path: str, pattern: bytes, chunk_size: int = 1 << 24) -> int:
    count, tail = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            data = tail + chunk
            count += data.count(pattern)
            # Keep a partial match at the end for the next chunk (never a whole one: counted).
            tail = data[-(len(pattern) - 1) :]
    return count


def _listed(ids: list) -> str:
    listed = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    return listed + (", ..." if len(ids) > _MAX_LISTED else "")


def load_checked_coco_json(json_file: str, image_root: str, dataset_name: str) -> list[dict]:
    """
    Detectron2's ``load_coco_json(json_file, image_root, dataset_name)`` (category ids mapped to
    0..K-1, the mapping kept in the dataset's metadata for ``COCOEvaluator`` to map back), with
    clear errors for: a missing file; malformed JSON (path, line and column); a json with no
    images; a missing key; an annotation whose ``category_id`` is not in ``categories``
    (annotation id, image id, category id); duplicate annotation ids (the ids); a ``bbox`` that
    is not ``[x, y, width, height]``. Images without annotations are kept and counted in the
    log: training drops them when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True.

    Each annotation dict keeps its json ``id``, so later messages can name it.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"The COCO json file {json_file!r} of dataset {dataset_name!r} does not exist."
        )
    try:
        dataset_dicts = load_coco_json(
            json_file, image_root, dataset_name, extra_annotation_keys=["id"]
        )
    except json.JSONDecodeError as error:
        raise CocoJsonError(
            f"{json_file} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}."
        ) from None
    except UnicodeDecodeError as error:
        raise CocoJsonError(f"{json_file} is not UTF-8 text (a JSON file): {error}.") from None
    except (AssertionError, KeyError, ValueError, TypeError, IndexError) as error:
        problem = find_coco_json_problem(_read_json(json_file), json_file)
        if problem is None:
            raise
        raise CocoJsonError(problem) from error
    _check_loaded(dataset_dicts, json_file, dataset_name)
    return dataset_dicts


def _read_json(json_file: str):
    with open(json_file, encoding="utf-8") as f:
        return json.load(f)


def _check_loaded(dataset_dicts: list[dict], json_file: str, dataset_name: str):
    if not dataset_dicts:
        raise CocoJsonError(
            f"{json_file} lists no images, so dataset {dataset_name!r} is empty. Add the images "
            "to its 'images' list, or remove the dataset from DATASETS.TRAIN / DATASETS.TEST."
        )
    for record in dataset_dicts:
        for annotation in record["annotations"]:
            bbox = annotation.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise CocoJsonError(
                    f"{json_file}: annotation {annotation.get('id')!r} (image "
                    f"{record['image_id']!r}) has bbox {bbox!r}; it must be "
                    "[x, y, width, height]."
                )
    num_empty = sum(1 for record in dataset_dicts if not record["annotations"])
    if num_empty:
        logger.info(
            f"{json_file}: {num_empty} of {len(dataset_dicts)} images have no annotations. "
            "Training drops them when DATALOADER.FILTER_EMPTY_ANNOTATIONS is True (Detectron2's "
            "default) and keeps them as background when it is False; evaluation keeps them."
        )


def find_coco_json_problem(dataset, json_file: str) -> Optional[str]:
    """
    The first problem found in the parsed COCO json `dataset` (a message naming `json_file` and
    the offending entry), or None. Checked in order: the top-level structure, the keys each
    entry needs, an empty ``categories``, annotations whose ``category_id`` is not in
    ``categories``, duplicate annotation ids.
    """
    problem = _structure_problem(dataset, json_file)
    if problem is not None:
        return problem
    categories, annotations = dataset["categories"], dataset.get("annotations", [])
    if not categories:
        return (
            f"{json_file}: 'categories' is empty; list every class as "
            '{"id": <int>, "name": <str>}.'
        )
    category_ids = {category["id"] for category in categories}
    unknown = [a for a in annotations if a["category_id"] not in category_ids]
    if unknown:
        first = unknown[0]
        more = f" ({len(unknown) - 1} more annotations too)" if len(unknown) > 1 else ""
        return (
            f"{json_file}: annotation {first['id']!r} (image {first['image_id']!r}) has "
            f"category_id {first['category_id']!r}, which is not in 'categories' (ids "
            f"{sorted(category_ids, key=str)}){more}. Add the category or fix the annotation."
        )
    counts = collections.Counter(annotation["id"] for annotation in annotations)
    duplicates = [ann_id for ann_id, count in counts.items() if count > 1]
    if duplicates:
        return (
            f"{json_file}: annotation ids must be unique, but {len(duplicates)} ids occur more "
            f"than once: {_listed(duplicates)}. Give every annotation its own id."
        )
    return None


def _structure_problem(dataset, json_file: str) -> Optional[str]:
    if not isinstance(dataset, dict):
        return (
            f"{json_file}: the top level is a JSON {type(dataset).__name__}, not an object with "
            "'images', 'annotations' and 'categories'."
        )
    for section in ("images", "categories"):
        if section not in dataset:
            return f"{json_file} has no {section!r} list."
    for section, keys in _REQUIRED_KEYS.items():
        entries = dataset.get(section, [])
        if not isinstance(entries, list):
            return f"{json_file}: {section!r} is a JSON {type(entries).__name__}, not a list."
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                return f"{json_file}: {section}[{index}] is {entry!r}, not an object."
            missing = [key for key in keys if key not in entry]
            if missing:
                return (
                    f"{json_file}: {section}[{index}] (id {entry.get('id')!r}) has no "
                    f"{missing[0]!r}; each entry of {section!r} needs {', '.join(keys)}."
                )
    return None
