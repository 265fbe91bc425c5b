"""Detectron2's DatasetMapper, reading images with ``read_image_file``: failures name the file."""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from .images import ImageReadError, ImageSizeMismatchError, check_image_size, read_image_file

__all__ = ["RobustDatasetMapper"]

logger = logging.getLogger(__name__)


class RobustDatasetMapper(DatasetMapper):
    """
    ``DatasetMapper`` (same augmentations and annotation handling) whose image reading names the
    file on every failure and handles 16-bit, transparent and palette images (see
    ``retina_plugin.data.images``); the json's width / height are checked against the file,
    accepting the stored size of an EXIF-rotated image.

    The error of a file that fails in a data-loader worker reaches the training process with its
    message, so the file is named there too. Any other error while mapping an image gets a note
    (Python >= 3.11) naming the file.
    """

    @configurable
    def __init__(self, is_train: bool, *, alpha_background=(0, 0, 0), **kwargs):
        """
        Args:
            is_train, kwargs: as ``DatasetMapper``.
            alpha_background: (R, G, B), 0-255: the colour under transparent pixels.
        """
        super().__init__(is_train, **kwargs)
        self.alpha_background = tuple(alpha_background)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["alpha_background"] = pixel_mean_rgb(cfg)
        return ret

    def __call__(self, dataset_dict):
        try:
            return self._map(dataset_dict)
        except (ImageReadError, FileNotFoundError, ImageSizeMismatchError):
            raise  # their messages name the file
        except Exception as error:
            if hasattr(error, "add_note"):
                error.add_note(
                    f"retina-plugin: while loading image {dataset_dict.get('file_name')!r} "
                    f"(image id {dataset_dict.get('image_id')!r})"
                )
            raise

    def _map(self, dataset_dict):
        if self.proposal_topk is not None or "sem_seg_file_name" in dataset_dict:
            # RetinaNet uses neither proposals nor semantic segmentation: leave those cases to
            # Detectron2's own reading.
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image, stored_size = read_image_file(
            dataset_dict["file_name"], self.image_format, self.alpha_background
        )
        check_image_size(dataset_dict, (image.shape[1], image.shape[0]), stored_size)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        # A tensor, not an array: the data loader passes tensors between processes cheaply.
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
        elif "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict


def pixel_mean_rgb(cfg) -> tuple[int, int, int]:
    """``MODEL.PIXEL_MEAN`` as an (R, G, B) colour: it is given in ``INPUT.FORMAT``'s order."""
    mean = [min(max(int(round(v)), 0), 255) for v in cfg.MODEL.PIXEL_MEAN]
    if len(mean) == 1:
        return (mean[0],) * 3
    return tuple(mean[::-1]) if cfg.INPUT.FORMAT == "BGR" else tuple(mean[:3])
