"""Register the datasets a config names, and check them against the model before training."""

import functools
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from ..checks import check_at_least
from .coco_json import load_checked_coco_json, naming_the_dataset
from .shapes import SHAPES_MIN_IMAGE_SIZE, register_shapes_datasets

__all__ = ["register_datasets_from_config", "check_dataset_config", "check_num_classes"]

SHAPES_NAMES = ("shapes_train", "shapes_val")


def register_datasets_from_config(cfg):
    """
    Register ``DATASETS.FOCAL_RETINA.COCO`` ([name, json_file, image_root] triples) and, when
    ``DATASETS.TRAIN`` or ``DATASETS.TEST`` name them, the embedded ``shapes_train`` /
    ``shapes_val`` datasets (generated into their cache on first use). The COCO datasets load
    with ``load_checked_coco_json``: Detectron2's loader with errors that name what is wrong.
    """
    check_dataset_config(cfg)
    for entry in cfg.DATASETS.FOCAL_RETINA.COCO:
        if len(entry) != 3 or not all(isinstance(x, str) for x in entry):
            raise ValueError(
                f"DATASETS.FOCAL_RETINA.COCO entry {list(entry)!r} must be a [name, json_file, "
                'image_root] triple of strings, e.g. ["my_train", "train.json", "images/"].'
            )
        name, json_file, image_root = entry
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"DATASETS.FOCAL_RETINA.COCO: the json file {json_file!r} of dataset {name!r} "
                "does not exist."
            )
        if not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"DATASETS.FOCAL_RETINA.COCO: the image folder {image_root!r} of dataset {name!r} "
                "does not exist."
            )
        _register_coco(name, json_file, image_root)

    used = set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)
    if used & set(SHAPES_NAMES):
        # One process per machine generates the cache; the others wait, then find it whole.
        if comm.get_local_rank() == 0:
            _register_shapes(cfg.DATASETS.FOCAL_RETINA.SHAPES)
        comm.synchronize()
        if comm.get_local_rank() != 0:
            _register_shapes(cfg.DATASETS.FOCAL_RETINA.SHAPES)


def check_dataset_config(cfg):
    """Raise ``ValueError`` naming the key and its value if a ``DATASETS.FOCAL_RETINA.SHAPES``
    key is out of range (checked whether or not the shapes datasets are used)."""
    shapes = cfg.DATASETS.FOCAL_RETINA.SHAPES
    prefix = "DATASETS.FOCAL_RETINA.SHAPES"
    for key, low in (
        ("NUM_TRAIN", 1),
        ("NUM_VAL", 1),
        # Below this the largest objects are barely larger than the smallest (12 px).
        ("IMAGE_SIZE", SHAPES_MIN_IMAGE_SIZE),
        ("SEED", 0),
    ):
        value = shapes[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{prefix}.{key} = {value!r} must be an integer >= {low}.")
        check_at_least(f"{prefix}.{key}", value, low)


def _register_shapes(shapes_cfg):
    register_shapes_datasets(
        root=shapes_cfg.ROOT or None,
        num_train=shapes_cfg.NUM_TRAIN,
        num_val=shapes_cfg.NUM_VAL,
        image_size=shapes_cfg.IMAGE_SIZE,
        seed=shapes_cfg.SEED,
    )


def _register_coco(name: str, json_file: str, image_root: str):
    if name in DatasetCatalog.list():
        metadata = MetadataCatalog.get(name)
        if metadata.get("json_file") == json_file and metadata.get("image_root") == image_root:
            return  # registered by an earlier call with the same files
        raise ValueError(
            f"DATASETS.FOCAL_RETINA.COCO: a dataset named {name!r} is already registered "
            f"(json_file={metadata.get('json_file')!r}); choose another name."
        )
    # As Detectron2's register_coco_instances, with our checking loader.
    DatasetCatalog.register(
        name, functools.partial(load_checked_coco_json, json_file, image_root, name)
    )
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")


def check_num_classes(cfg, dataset_names):
    """
    Raise if a dataset's number of categories differs from ``MODEL.RETINANET.NUM_CLASSES``.
    Call it after the datasets were loaded (their metadata then lists ``thing_classes``).
    """
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    for name in dataset_names:
        metadata = MetadataCatalog.get(name)
        classes = metadata.get("thing_classes")
        if classes is None:
            with naming_the_dataset(name):
                DatasetCatalog.get(name)  # loading a COCO json fills in thing_classes
            classes = metadata.get("thing_classes")
        if classes is not None and len(classes) != num_classes:
            source = metadata.get("json_file", name)
            raise ValueError(
                f"MODEL.RETINANET.NUM_CLASSES = {num_classes}, but dataset {name!r} ({source}) "
                f"has {len(classes)} categories. Set MODEL.RETINANET.NUM_CLASSES {len(classes)}."
            )
