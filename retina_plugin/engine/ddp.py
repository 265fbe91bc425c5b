"""DistributedDataParallel for CPU and GPU models alike.

Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which
DistributedDataParallel rejects for a CPU model, so ``--num-gpus 2`` on a machine without a GPU
(the gloo backend, which ``launch`` already picks) would crash when the trainer is built.
"""

from detectron2.engine.defaults import create_ddp_model as _detectron2_create_ddp_model

__all__ = ["create_ddp_model"]


def create_ddp_model(model, **kwargs):
    """Detectron2's ``create_ddp_model``; a model that is not on CUDA gets ``device_ids=None``."""
    if next(model.parameters()).device.type != "cuda":
        kwargs.setdefault("device_ids", None)
    return _detectron2_create_ddp_model(model, **kwargs)
