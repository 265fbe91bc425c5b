"""ResumableBatchStream: batch b is the same images with the same augmentation whether the stream
started at 0 or at b, whatever the number of data-loader workers, and batches are cut as
Detectron2's AspectRatioGroupedDataset cuts them."""

import itertools

import numpy as np
import pytest
import torch
import torch.utils.data as torchdata
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.data.samplers import TrainingSampler

from retina_plugin import load_config
from retina_plugin.data import ResumableBatchStream, register_datasets_from_config
from retina_plugin.data.loaders import build_train_loader
from tests.utils import QUICKSTART, tiny_shapes_overrides, unregister_datasets

# Images 0, 3, 6, ... are portrait, the others landscape.
RECORDS = [
    {"image_id": i, "width": 40 if i % 3 else 20, "height": 30} for i in range(23)
]  # fmt: skip


def augmenting_mapper(record: dict) -> tuple:
    """(image id, a draw from each RNG a Detectron2 augmentation may use)."""
    return record["image_id"], float(np.random.rand()), float(torch.rand(()))


def make_stream(grouping=True, seed=7, batch_size=4):
    return ResumableBatchStream(
        RECORDS,
        augmenting_mapper,
        lambda s: TrainingSampler(len(RECORDS), seed=s),
        batch_size,
        aspect_ratio_grouping=grouping,
        seed=seed,
    )


def batches(stream, count, num_workers=0):
    loader = torchdata.DataLoader(
        stream, batch_size=None, num_workers=num_workers, collate_fn=trivial_batch_collator
    )
    return list(itertools.islice(iter(loader), count))


@pytest.mark.parametrize("grouping", [True, False])
def test_a_resumed_stream_continues_the_same_batches(grouping):
    full = batches(make_stream(grouping), 12)
    for start in (1, 5, 11):
        stream = make_stream(grouping)
        stream.start(7, start)
        assert batches(stream, 12 - start) == full[start:]


def test_workers_do_not_change_the_stream():
    full = batches(make_stream(), 10)
    assert batches(make_stream(), 10, num_workers=2) == full
    stream = make_stream()
    stream.start(7, 3)  # an odd start: the workers' turns begin at batch 3
    assert batches(stream, 7, num_workers=2) == full[3:]


def test_batches_are_detectron2s_aspect_ratio_groups():
    stream_ids = [[d[0] for d in batch] for batch in batches(make_stream(), 8)]
    records = (RECORDS[i] for i in TrainingSampler(len(RECORDS), seed=7))
    reference = AspectRatioGroupedDataset(records, 4)
    expected = [[d["image_id"] for d in batch] for batch in itertools.islice(reference, 8)]
    assert stream_ids == expected
    assert all(len({RECORDS[i]["width"] > 30 for i in batch}) == 1 for batch in stream_ids)


def test_without_grouping_batches_follow_the_sampler():
    ids = [d[0] for batch in batches(make_stream(grouping=False), 5) for d in batch]
    assert ids == list(itertools.islice(iter(TrainingSampler(len(RECORDS), seed=7)), 20))


def test_the_seed_makes_the_stream():
    assert batches(make_stream(seed=7), 3) != batches(make_stream(seed=8), 3)
    stream = make_stream(seed=8)
    stream.start(7, 0)
    assert stream.seed == 7
    assert batches(stream, 3) == batches(make_stream(seed=7), 3)


def test_exact_resume_off_gives_detectron2s_loader(tmp_path):
    cfg = load_config(QUICKSTART, tiny_shapes_overrides(tmp_path / "shapes"))
    cfg.MODEL.DEVICE = "cpu"
    register_datasets_from_config(cfg)
    try:
        assert isinstance(build_train_loader(cfg).dataset, ResumableBatchStream)
        cfg.DATALOADER.FOCAL_RETINA.EXACT_RESUME = False
        assert isinstance(build_train_loader(cfg), AspectRatioGroupedDataset)
    finally:
        unregister_datasets("shapes_train", "shapes_val")
