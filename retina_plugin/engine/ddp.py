"""DistributedDataParallel for CPU and GPU models alike.

Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which
DistributedDataParallel rejects for a CPU model, so ``--num-gpus 2`` on a machine without a GPU
(the gloo backend, which ``launch`` already picks) crashes in ``DefaultTrainer.__init__``.
"""

import contextlib
from unittest import mock

from detectron2.engine import defaults
from detectron2.engine.defaults import create_ddp_model as _detectron2_create_ddp_model

__all__ = ["create_ddp_model", "any_device_ddp"]


def create_ddp_model(model, **kwargs):
    """Detectron2's ``create_ddp_model``; a model that is not on CUDA gets ``device_ids=None``."""
    if next(model.parameters()).device.type != "cuda":
        kwargs.setdefault("device_ids", None)
    return _detectron2_create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def any_device_ddp():
    """Within this context, ``DefaultTrainer.__init__`` wraps CPU models in DDP correctly."""
    with mock.patch.object(defaults, "create_ddp_model", create_ddp_model):
        yield
