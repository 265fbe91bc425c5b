"""Train and test loaders on sanitised boxes, with ``RobustDatasetMapper``.

Each training dataset is loaded on its own, its boxes sanitised (``sanitize_boxes``), and only
then are images without a usable box removed when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True,
so an image whose boxes were all broken is dropped rather than trained on as background. A
dataset left empty is an error. The batches come from Detectron2's samplers (the same
``DATALOADER.SAMPLER_TRAIN`` choices), cut and augmented by :class:`ResumableBatchStream` so that
a resumed run continues the same stream (``DATALOADER.FOCAL_RETINA.EXACT_RESUME``; False gives
Detectron2's ``build_detection_train_loader`` itself).
"""

import functools
import itertools
import logging

import torch
import torch.utils.data as torchdata
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations, trivial_batch_collator
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.data.samplers import (
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from detectron2.utils import comm

from .boxes import BoxCounts, sanitize_boxes
from .coco_json import check_unique_image_ids, naming_the_dataset
from .mapper import RobustDatasetMapper
from .stream import ResumableBatchStream

__all__ = ["EmptyDatasetError", "build_train_loader", "build_test_loader", "load_train_datasets"]

logger = logging.getLogger(__name__)

_WEIGHTED_SAMPLERS = ("WeightedTrainingSampler", "WeightedCategoryTrainingSampler")


class EmptyDatasetError(ValueError):
    """A training dataset with no image left after filtering."""


def build_train_loader(cfg, mapper=None):
    """
    The batches of ``load_train_datasets(cfg)`` mapped by ``RobustDatasetMapper(cfg, True)``
    (or `mapper`), ``SOLVER.IMS_PER_BATCH`` / workers per process: a ``DataLoader`` over a
    :class:`ResumableBatchStream` (its ``dataset``), or with
    ``DATALOADER.FOCAL_RETINA.EXACT_RESUME False`` Detectron2's ``build_detection_train_loader``.
    """
    per_dataset = load_train_datasets(cfg)
    dataset = list(itertools.chain.from_iterable(per_dataset.values()))
    mapper = mapper if mapper is not None else RobustDatasetMapper(cfg, True)
    if not cfg.DATALOADER.FOCAL_RETINA.EXACT_RESUME:
        # Detectron2 would reload and refilter every dataset for the weighted samplers, without
        # our filtering, and so give a sampler whose length differs from the dataset's.
        weighted = cfg.DATALOADER.SAMPLER_TRAIN in _WEIGHTED_SAMPLERS
        sampler = _build_sampler(cfg, per_dataset, None) if weighted else None
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)
    stream = ResumableBatchStream(
        dataset,
        mapper,
        functools.partial(_build_sampler, cfg, per_dataset),
        cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        seed=comm.shared_random_seed(),  # what Detectron2's samplers take without a seed
    )
    return torchdata.DataLoader(
        stream,
        batch_size=None,  # the stream yields batches
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
    )


def build_test_loader(cfg, dataset_name: str, mapper=None):
    """Detectron2's ``build_detection_test_loader(cfg, dataset_name)`` with
    ``RobustDatasetMapper(cfg, False)`` unless `mapper` is given. Boxes are not sanitised:
    ``COCOEvaluator`` reads the ground truth from the json itself."""
    mapper = mapper if mapper is not None else RobustDatasetMapper(cfg, False)
    with naming_the_dataset(dataset_name):
        # What Detectron2's from_config does with (cfg, dataset_name), the records in hand.
        dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
    if isinstance(dicts, list):
        check_unique_image_ids(dataset_name, len(dicts))
    return build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)


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
        with naming_the_dataset(name):
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
        check_unique_image_ids(name, len(dicts))
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


def _build_sampler(cfg, per_dataset: dict[str, list[dict]], seed):
    """The sampler of ``DATALOADER.SAMPLER_TRAIN``, as Detectron2 builds it, on our records."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    records = list(itertools.chain.from_iterable(per_dataset.values()))
    if name == "TrainingSampler":
        return TrainingSampler(len(records), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            records, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
        )
        return RepeatFactorTrainingSampler(factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        return RandomSubsetTrainingSampler(
            len(records), cfg.DATALOADER.RANDOM_SUBSET_RATIO, seed_shuffle=seed, seed_subset=seed
        )
    if name in _WEIGHTED_SAMPLERS:
        return RepeatFactorTrainingSampler(_weighted_factors(cfg, per_dataset), seed=seed)
    raise ValueError(
        f"DATALOADER.SAMPLER_TRAIN = {name!r} is not one of ('TrainingSampler', "
        f"'RepeatFactorTrainingSampler', 'RandomSubsetTrainingSampler', {_WEIGHTED_SAMPLERS[0]!r}, "
        f"{_WEIGHTED_SAMPLERS[1]!r})."
    )


def _weighted_factors(cfg, per_dataset: dict[str, list[dict]]) -> torch.Tensor:
    """The repeat factors of Detectron2's weighted samplers (``DATASETS.TRAIN_REPEAT_FACTOR`` per
    dataset, times the category-frequency factor for ``WeightedCategoryTrainingSampler``)."""
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
    return factors
