"""Datasets for retina_plugin: a synthetic COCO-format shapes dataset, and config-driven registration."""

from .catalog import check_num_classes, register_datasets_from_config
from .shapes import (
    SHAPES_CLASS_WEIGHTS,
    SHAPES_CLASSES,
    default_shapes_root,
    generate_shapes_split,
    register_shapes_datasets,
)

__all__ = [
    "check_num_classes",
    "register_datasets_from_config",
    "SHAPES_CLASSES",
    "SHAPES_CLASS_WEIGHTS",
    "default_shapes_root",
    "generate_shapes_split",
    "register_shapes_datasets",
]
