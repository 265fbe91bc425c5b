"""Datasets for retina_plugin: a synthetic, COCO-format shapes detection dataset (``shapes``)."""

from .shapes import (
    SHAPES_CLASS_WEIGHTS,
    SHAPES_CLASSES,
    default_shapes_root,
    generate_shapes_split,
    register_shapes_datasets,
)

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_CLASS_WEIGHTS",
    "default_shapes_root",
    "generate_shapes_split",
    "register_shapes_datasets",
]
