"""Training: the plug-in's Trainer and the pieces of Detectron2's loop it builds differently."""

from .amp import build_train_step, check_amp_dtype_supported
from .checkpoint import SafeCheckpointer
from .ddp import create_ddp_model
from .device import CudaUnavailable, process_group_backend, resolve_device
from .launch import WorkerEnvironment, join_process_group, launch, run_device, torchrun_environment
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .output_files import OutputWriteError
from .predictor import SafePredictor
from .resume import check_iterations_left
from .safe_load import UnsafeCheckpointError, load_pickled_weights, load_torch_checkpoint
from .setup import setup
from .solver_checks import check_solver_config
from .trainer import Trainer

__all__ = [
    "Trainer",
    "setup",
    "launch",
    "torchrun_environment",
    "WorkerEnvironment",
    "join_process_group",
    "run_device",
    "resolve_device",
    "process_group_backend",
    "CudaUnavailable",
    "SafeCheckpointer",
    "OutputWriteError",
    "SafePredictor",
    "check_amp_dtype_supported",
    "build_train_step",
    "create_ddp_model",
    "build_lr_scheduler",
    "build_optimizer",
    "check_iterations_left",
    "UnsafeCheckpointError",
    "load_pickled_weights",
    "load_torch_checkpoint",
    "check_solver_config",
]
