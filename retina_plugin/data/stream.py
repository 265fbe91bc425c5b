"""
A training stream that a resumed run continues exactly.

Detectron2's train loader starts its sampler anew when a run resumes, and its aspect-ratio
buckets, data-loader workers and augmentation RNGs carry state that no checkpoint holds, so a
resumed run trains on other images than the run it continues. Here batch ``b`` of a worker
(process) is a function of the sampler's seed and ``b`` alone:

- the sampler (Detectron2's: ``TrainingSampler``, ``RepeatFactorTrainingSampler``, ...) gives
  this worker's index stream, from its seed;
- the stream is cut into batches as Detectron2's ``AspectRatioGroupedDataset`` cuts it (two
  buckets, width > height or not; a bucket that fills is a batch), or in order without grouping;
  this needs only each image's width and height, so skipping ``b`` batches reads no image;
- image ``j`` of batch ``b`` is mapped with every RNG seeded from (seed, rank, b, j), so its
  augmentation does not depend on which data-loader worker maps it, or on what came before.

Data-loader workers take the batches in turn, and torch's loader returns them in order, so the
run sees batch ``start``, ``start + 1``, ... whatever ``DATALOADER.NUM_WORKERS`` is.
"""

import random
from collections.abc import Iterator
from typing import Callable

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

__all__ = ["ResumableBatchStream"]


class ResumableBatchStream(torchdata.IterableDataset):
    """
    An infinite stream of training batches (lists of mapped dataset dicts) that can start at any
    batch number; see the module docstring. Iterate it with ``torch.utils.data.DataLoader(stream,
    batch_size=None, ...)``.
    """

    def __init__(
        self,
        records: list[dict],
        mapper: Callable[[dict], dict],
        sampler_factory: Callable[[int], torchdata.Sampler],
        batch_size: int,
        *,
        aspect_ratio_grouping: bool,
        seed: int,
    ):
        """
        Args:
            records: the dataset dicts (with "width" and "height" when grouping by aspect).
            mapper: dataset dict -> model input (Detectron2's DatasetMapper protocol).
            sampler_factory: seed -> this process's infinite index sampler.
            batch_size: images per batch of this process.
            aspect_ratio_grouping: batch landscape and portrait images apart, as Detectron2.
            seed: the sampler's seed (the same in every process).
        """
        self._records = DatasetFromList(records, copy=False)  # serialised: no copy-on-read growth
        self._landscape = np.array([r["width"] > r["height"] for r in records], dtype=bool)
        self._mapper = mapper
        self._sampler_factory = sampler_factory
        self._batch_size = batch_size
        self._grouping = aspect_ratio_grouping
        self._rank = comm.get_rank()
        self.start(seed, 0)

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def sampler(self) -> torchdata.Sampler:
        """This process's index sampler (Detectron2's), of seed :attr:`seed`."""
        return self._sampler

    def start(self, seed: int, batch: int):
        """Continue the stream of `seed` from batch number `batch` (before iterating)."""
        self._seed = int(seed)
        self._start = int(batch)
        self._sampler = self._sampler_factory(self._seed)

    def _index_batches(self) -> Iterator[list[int]]:
        buckets = ([], [])  # landscape, portrait: Detectron2's AspectRatioGroupedDataset
        for index in self._sampler:
            bucket = buckets[0 if not self._grouping or self._landscape[index] else 1]
            bucket.append(int(index))
            if len(bucket) == self._batch_size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self):
        worker = torchdata.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for number, indices in enumerate(self._index_batches()):
            if number >= self._start and (number - self._start) % num_workers == worker_id:
                yield [self._map(number, j, index) for j, index in enumerate(indices)]

    def _map(self, number: int, position: int, index: int) -> dict:
        entropy = [self._seed % 2**32, self._rank, number, position]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        # The RNGs a mapper draws from on the CPU; torch.manual_seed would also seed every
        # accelerator's, at 100x the cost (0.15 ms an image).
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        mapped = self._mapper(self._records[index])
        if mapped is None:
            # Detectron2's MapDataset then retries with a random image; a fixed one keeps the
            # stream reproducible.
            raise ValueError(
                f"The train mapper returned None for image {index} of the training set "
                f"({self._records[index].get('file_name')!r}); with "
                "DATALOADER.FOCAL_RETINA.EXACT_RESUME every image must map to an input."
            )
        return mapped
