"""Detectron2's train and test loaders, on sanitised boxes and with ``RobustDatasetMapper``.

The train loader is ``build_detection_train_loader(cfg, ...)`` (same samplers, aspect-ratio
grouping and batch size); only the dataset it gets differs: each training dataset is loaded on
its own, its boxes sanitised (``sanitize_boxes``), and only then are images without a usable box
removed when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True, so an image whose boxes were all
broken is dropped rather than trained on as background. A dataset left empty is an error.
"""

import itertools
import logging

import torch
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.data.samplers import RepeatFactorTrainingSampler

from .boxes import BoxCounts, sanitize_boxes
from .mapper import RobustDatasetMapper

__all__ = ["EmptyDatasetError", "build_train_loader", "build_test_loader", "load_train_datasets"]

logger = logging.getLogger(__name__)

_WEIGHTED_SAMPLERS = ("WeightedTrainingSampler", "WeightedCategoryTrainingSampler")


class EmptyDatasetError(ValueError):
    """A training dataset with no image left after filtering."""


def build_train_loader(cfg, mapper=None):
    """Detectron2's ``build_detection_train_loader(cfg)`` on ``load_train_datasets(cfg)``, with
    ``RobustDatasetMapper(cfg, True)`` unless `mapper` is given."""
    per_dataset = load_train_datasets(cfg)
    dataset = list(itertools.chain.from_iterable(per_dataset.values()))
    sampler = None  # Detectron2 builds it from cfg, on `dataset`
    if cfg.DATALOADER.SAMPLER_TRAIN in _WEIGHTED_SAMPLERS:
        # Detectron2 would reload and refilter every dataset for these, without our filtering,
        # and so give a sampler whose length differs from the dataset's.
        sampler = _weighted_sampler(cfg, per_dataset)
    return build_detection_train_loader(
        cfg,
        mapper=mapper if mapper is not None else RobustDatasetMapper(cfg, True),
        dataset=dataset,
        sampler=sampler,
    )


def build_test_loader(cfg, dataset_name: str, mapper=None):
    """Detectron2's ``build_detection_test_loader(cfg, dataset_name)`` with
    ``RobustDatasetMapper(cfg, False)`` unless `mapper` is given. Boxes are not sanitised:
    ``COCOEvaluator`` reads the ground truth from the json itself."""
    mapper = mapper if mapper is not None else RobustDatasetMapper(cfg, False)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)


def load_train_datasets(cfg) -> dict[str, list[dict]]:
    """
    The records of each dataset of ``DATASETS.TRAIN``, in order, boxes sanitised and, when
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True, images without a usable (non-crowd) box
    removed (Detectron2's filter, logged by it).

    Raises:
        EmptyDatasetError: naming each dataset left without images, and why.
        TypeError: a dataset registered as a torch Dataset rather than a list of records.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one dataset to train on.")
    filter_empty = cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    per_dataset, problems = {}, []
    for index, name in enumerate(names):
        dicts = get_detection_dataset_dicts(
            [name],
            filter_empty=False,  # after sanitising, below
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
            if cfg.MODEL.KEYPOINT_ON
            else 0,
            proposal_files=[cfg.DATASETS.PROPOSAL_FILES_TRAIN[index]]
            if cfg.MODEL.LOAD_PROPOSALS
            else None,
        )
        if not isinstance(dicts, list):
            raise TypeError(
                f"Training dataset {name!r} is a {type(dicts).__name__}, not a list of records: "
                "retina-plugin checks the boxes of each record before training, so register a "
                "function that returns list[dict] (Detectron2's dataset format)."
            )
        dicts, counts = sanitize_boxes(dicts, name)
        if filter_empty:
            dicts = filter_images_with_only_crowd_annotations(dicts)
        if not dicts:
            problems.append(_why_empty(name, counts))
        per_dataset[name] = dicts
    if problems:
        raise EmptyDatasetError(
            "\n".join(problems) + "\nFix the boxes, or set DATALOADER.FILTER_EMPTY_ANNOTATIONS "
            "False to train on images without boxes as background only."
        )
    if len(names) > 1:
        try:  # as Detectron2 checks the datasets it combines
            check_metadata_consistency("thing_classes", names)
        except AttributeError:  # datasets without class names
            pass
    return per_dataset


def _why_empty(name: str, counts: BoxCounts) -> str:
    source = MetadataCatalog.get(name).get("json_file")
    where = f" ({source})" if source else ""
    return (
        f"Training dataset {name!r}{where} is empty after filtering: none of its {counts.images} "
        f"images has a usable box (not crowd, finite, of positive width and height, not wholly "
        f"outside the image; of its {counts.boxes} boxes, {counts.dropped_summary()}), and "
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS is True, which removes images without one."
    )


def _weighted_sampler(cfg, per_dataset: dict[str, list[dict]]) -> RepeatFactorTrainingSampler:
    """Detectron2's weighted samplers (``DATASETS.TRAIN_REPEAT_FACTOR`` per dataset, times the
    category-frequency factor for ``WeightedCategoryTrainingSampler``) on our records."""
    weights = dict(cfg.DATASETS.TRAIN_REPEAT_FACTOR)
    unknown = set(weights) - set(per_dataset)
    if unknown:
        raise ValueError(
            f"DATASETS.TRAIN_REPEAT_FACTOR names {sorted(unknown)}, which are not in "
            f"DATASETS.TRAIN = {list(per_dataset)}."
        )
    factors = torch.tensor(
        [float(weights.get(name, 1.0)) for name, dicts in per_dataset.items() for _ in dicts]
    )
    if cfg.DATALOADER.SAMPLER_TRAIN == "WeightedCategoryTrainingSampler":
        category_factors = torch.cat(
            [
                RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                    dicts, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
                )
                for dicts in per_dataset.values()
            ]
        )
        factors = factors * category_factors
        factors = factors / factors.min()
    return RepeatFactorTrainingSampler(factors)
