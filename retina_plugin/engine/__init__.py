"""Training-loop pieces that Detectron2's DefaultTrainer needs changed for this plug-in."""

from .amp import AnyDeviceAMPTrainer, any_device_amp
from .checkpoint import SafeCheckpointer, safe_checkpointer
from .ddp import any_device_ddp, create_ddp_model
from .failure import NoEvaluationAfterFailure
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .resume import check_iterations_left
from .safe_load import UnsafeCheckpointError, load_pickled_weights, load_torch_checkpoint
from .solver_checks import check_solver_config

__all__ = [
    "SafeCheckpointer",
    "safe_checkpointer",
    "AnyDeviceAMPTrainer",
    "any_device_amp",
    "any_device_ddp",
    "create_ddp_model",
    "NoEvaluationAfterFailure",
    "build_lr_scheduler",
    "build_optimizer",
    "check_iterations_left",
    "UnsafeCheckpointError",
    "load_pickled_weights",
    "load_torch_checkpoint",
    "check_solver_config",
]
