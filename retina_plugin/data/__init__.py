"""Datasets for retina_plugin: a synthetic COCO-format shapes dataset, config-driven registration,
checked COCO json loading, box sanitising and robust image reading for the data loaders."""

from .boxes import BoxCounts, sanitize_boxes
from .catalog import check_dataset_config, check_num_classes, register_datasets_from_config
from .coco_json import CocoJsonError, load_checked_coco_json
from .images import ImageReadError, ImageSizeMismatchError, read_image_file
from .loaders import EmptyDatasetError, build_test_loader, build_train_loader, load_train_datasets
from .mapper import RobustDatasetMapper
from .shapes import (
    SHAPES_CLASS_WEIGHTS,
    SHAPES_CLASSES,
    default_shapes_root,
    generate_shapes_split,
    register_shapes_datasets,
)
from .stream import ResumableBatchStream

__all__ = [
    "BoxCounts",
    "sanitize_boxes",
    "check_dataset_config",
    "CocoJsonError",
    "load_checked_coco_json",
    "ImageReadError",
    "ImageSizeMismatchError",
    "read_image_file",
    "EmptyDatasetError",
    "build_test_loader",
    "build_train_loader",
    "load_train_datasets",
    "RobustDatasetMapper",
    "ResumableBatchStream",
    "check_num_classes",
    "register_datasets_from_config",
    "SHAPES_CLASSES",
    "SHAPES_CLASS_WEIGHTS",
    "default_shapes_root",
    "generate_shapes_split",
    "register_shapes_datasets",
]
