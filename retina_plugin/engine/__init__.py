"""Training-loop pieces that Detectron2's DefaultTrainer needs changed for this plug-in."""

from .amp import AnyDeviceAMPTrainer, any_device_amp
from .checkpoint import SafeCheckpointer, safe_checkpointer
from .ddp import any_device_ddp, create_ddp_model
from .optimizer import build_optimizer

__all__ = [
    "SafeCheckpointer",
    "safe_checkpointer",
    "AnyDeviceAMPTrainer",
    "any_device_amp",
    "any_device_ddp",
    "create_ddp_model",
    "build_optimizer",
]
