"""Mixed precision on every device.

FocalRetinaNet runs its backbone and head under ``torch.autocast`` itself when
``SOLVER.AMP.ENABLED`` (the dtype: ``MODEL.FOCAL_RETINA.AMP_DTYPE``, resolved per device by
:func:`retina_plugin.modeling.autocast.resolve_amp_dtype`). So the trainer only has to scale the
gradients where float16 needs it (on CUDA: Detectron2's AMPTrainer, with torch.amp's scaler); for
bfloat16, whose range is float32's, and for float32 it takes Detectron2's plain SimpleTrainer step
(Detectron2's AMPTrainer would scale bfloat16 gradients too, under float16 autocast, and asserts
CUDA in every step).
"""

import logging
from typing import Optional

import torch
from detectron2.engine.train_loop import AMPTrainer, SimpleTrainer

from ..modeling.autocast import resolve_amp_dtype

__all__ = ["build_train_step", "check_amp_dtype_supported"]

logger = logging.getLogger("retina_plugin")


def check_amp_dtype_supported(dtype: Optional[torch.dtype], device: torch.device):
    """Refuse bfloat16 autocast on a CUDA GPU that has no bfloat16 (before Ampere), where
    autocast fails in the first step."""
    if dtype != torch.bfloat16 or device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise ValueError(
            f"MODEL.FOCAL_RETINA.AMP_DTYPE asks for bfloat16, but {torch.cuda.get_device_name(device)}"
            f" (compute capability {major}.{minor}) has no bfloat16: it needs 8.0 (Ampere) or later. "
            "Set MODEL.FOCAL_RETINA.AMP_DTYPE float16 (or native, which picks it there)."
        )


def build_train_step(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """
    The object that runs one iteration, as DefaultTrainer builds it: Detectron2's AMPTrainer with
    a torch.amp GradScaler where SOLVER.AMP.ENABLED resolves to float16 on CUDA; otherwise
    Detectron2's SimpleTrainer (the model autocasts itself; bfloat16 needs no gradient scaling).
    """
    device = next(model.parameters()).device
    dtype = None
    if cfg.SOLVER.AMP.ENABLED:
        dtype = resolve_amp_dtype(cfg.MODEL.FOCAL_RETINA.AMP_DTYPE, device.type)
        check_amp_dtype_supported(dtype, device)
    logger.info(
        "Mixed precision: %s",
        _describe(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.FOCAL_RETINA.AMP_DTYPE, dtype, device),
    )
    if dtype == torch.float16 and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
        return AMPTrainer(model, data_loader, optimizer, grad_scaler=scaler, precision=dtype)
    return SimpleTrainer(model, data_loader, optimizer)


def _describe(enabled: bool, amp_dtype: str, dtype: Optional[torch.dtype], device) -> str:
    if not enabled:
        return "off (float32; SOLVER.AMP.ENABLED False)"
    if dtype is None:
        return (
            f"off (float32): MODEL.FOCAL_RETINA.AMP_DTYPE {amp_dtype!r} and this CPU has no native "
            "bfloat16 (AVX512-BF16 or AMX), where bfloat16 is slower than float32"
        )
    scaling = ", gradients scaled" if dtype == torch.float16 and device.type == "cuda" else ""
    return f"{str(dtype).replace('torch.', '')} autocast on {device.type}{scaling}"
