"""
The device of a run (``MODEL.DEVICE``), checked against the machine before any worker trains.

Detectron2's default ``MODEL.DEVICE`` is ``cuda``, and ``configs/quickstart.yaml`` sets none, so
that the quick start uses a GPU where there is one. Where CUDA is not usable:

- a run of one worker whose device is that default trains on the CPU, with a warning (the quick
  start on a laptop);
- ``MODEL.DEVICE cuda`` written by the user (in the config file, one of its ``_BASE_`` files or on
  the command line), or several workers on the default device (``--num-gpus 8``), is refused with
  :class:`CudaUnavailable`, which says why CUDA is not usable (``torch.version.cuda``, the NVIDIA
  driver, ``CUDA_VISIBLE_DEVICES``) instead of training 8 CPU processes where 8 GPUs were meant.

Workers whose models are on the CPU meet in a gloo process group, those on CUDA in an NCCL one
(:func:`process_group_backend`): NCCL has no CPU collectives ("No backend type associated with
device type cpu").
"""

import os
import re
from typing import Optional

import torch
import torch.distributed as dist
import yaml

__all__ = [
    "CudaUnavailable",
    "process_group_backend",
    "device_written_in",
    "resolve_device",
    "describe_cuda_state",
    "cuda_state_here",
    "nvidia_driver_version",
    "check_gpus_per_machine",
    "check_process_group",
]

DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"


class CudaUnavailable(RuntimeError):
    """A run asked for CUDA where ``torch.cuda.is_available()`` is False."""


def process_group_backend(device: str) -> str:
    """The ``torch.distributed`` backend of workers whose models are on `device` (``MODEL.DEVICE``):
    ``nccl`` for CUDA, ``gloo`` for the CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def device_written_in(config_file: str, opts=()) -> Optional[str]:
    """
    Where the user set ``MODEL.DEVICE``: ``"on the command line"`` (a KEY VALUE pair of `opts`),
    ``"in FILE"`` (`config_file` or the nearest of its ``_BASE_`` files that sets it), or None
    when the device is Detectron2's default. The files are read as plain YAML, as
    :func:`retina_plugin.config.load_config` reads them.
    """
    if "MODEL.DEVICE" in list(opts)[::2]:
        return "on the command line"
    path = config_file
    while path:
        with open(path) as f:
            content = yaml.safe_load(f) or {}
        model = content.get("MODEL")
        if isinstance(model, dict) and "DEVICE" in model:
            return f"in {path}"
        path = _base_file(path, content.get("_BASE_"))
    return None


def _base_file(config_file: str, base: Optional[str]) -> Optional[str]:
    """The path of a ``_BASE_`` entry, resolved as Detectron2's ``load_yaml_with_base`` does
    (None for none, and for a URL, which cannot set the device of a local run here)."""
    if not base:
        return None
    base = os.path.expanduser(base)
    if base.startswith(("https://", "http://")):
        return None
    return base if os.path.isabs(base) else os.path.join(os.path.dirname(config_file), base)


def resolve_device(device: str, written_in: Optional[str], num_workers: int, workers: str) -> str:
    """
    The device a run trains on: `device` (``MODEL.DEVICE``), or ``cpu`` in place of Detectron2's
    default ``cuda`` (`written_in` None) for a run of one worker where CUDA is not usable.

    Args:
        device: ``cfg.MODEL.DEVICE``.
        written_in: where the user set it (:func:`device_written_in`), None for the default.
        num_workers: the number of processes of the run (all machines).
        workers: how the user asked for them, for the message (``"--num-gpus 8"``,
            ``"torchrun's WORLD_SIZE 8"``).

    Raises:
        CudaUnavailable: `device` is CUDA, CUDA is not usable, and the user wrote that device or
            asked for several workers.
    """
    if not device.startswith("cuda") or torch.cuda.is_available():
        return device
    if written_in is not None:
        request = f"MODEL.DEVICE {device} (set {written_in}) needs CUDA"
        fallback = "set MODEL.DEVICE cpu to run on the CPU"
    elif num_workers > 1:
        request = (
            f"{workers}: {num_workers} workers on GPUs (MODEL.DEVICE is not set: Detectron2's "
            "default is cuda)"
        )
        fallback = f"add MODEL.DEVICE cpu to train {num_workers} processes on the CPU"
    else:
        return "cpu"
    raise CudaUnavailable(
        f"{request}, but CUDA is not usable here: {cuda_state_here()}. "
        f"{_make_cuda_usable(torch.version.cuda)}, or {fallback}."
    )


def describe_cuda_state(
    torch_version: str,
    cuda_version: Optional[str],
    driver_version: Optional[str],
    visible_devices: Optional[str],
) -> str:
    """
    Why CUDA is not usable, in words, from ``torch.__version__``, the CUDA version torch is built
    for (``torch.version.cuda``, None for a CPU build), the NVIDIA driver's version
    (:func:`nvidia_driver_version`, None for none) and ``CUDA_VISIBLE_DEVICES`` (None if unset).
    """
    facts = ["torch.cuda.is_available() is False"]
    if cuda_version is None:
        facts.append(f"torch {torch_version} is built without CUDA")
    else:
        facts.append(f"torch {torch_version} is built for CUDA {cuda_version}")
    if driver_version is None:
        facts.append(f"no NVIDIA driver found ({DRIVER_VERSION_FILE} does not exist)")
    else:
        facts.append(f"NVIDIA driver {driver_version}")
    if visible_devices is not None:
        hidden = " (no GPU visible)" if not visible_devices.strip() else ""
        facts.append(f"CUDA_VISIBLE_DEVICES is {visible_devices!r}{hidden}")
    return "; ".join(facts)


def cuda_state_here() -> str:
    """:func:`describe_cuda_state` of this process and its machine."""
    return describe_cuda_state(
        torch.__version__,
        torch.version.cuda,
        nvidia_driver_version(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def _make_cuda_usable(cuda_version: Optional[str]) -> str:
    if cuda_version is None:
        return "Install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
    return (
        "Make a GPU usable (nvidia-smi lists the GPUs its driver sees; the driver must support "
        f"CUDA {cuda_version}, or install a torch build for the driver you have)"
    )


def nvidia_driver_version(path: str = DRIVER_VERSION_FILE) -> Optional[str]:
    """The version of the loaded NVIDIA kernel driver ("550.54.14"), from `path`; None where no
    driver is loaded (no such file)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024"
    match = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)*)\s", text)
    return match.group(1) if match else "of unknown version"


def check_gpus_per_machine(num_gpus: int, device_count: int):
    """``--num-gpus`` (workers per machine, one GPU each) within the GPUs CUDA sees here; a
    ValueError naming both otherwise (Detectron2's ``launch`` only asserts it)."""
    if num_gpus > device_count:
        raise ValueError(
            f"--num-gpus {num_gpus} starts {num_gpus} workers with one GPU each, but CUDA sees "
            f"{device_count} GPU(s) on this machine (torch.cuda.device_count(); "
            f"CUDA_VISIBLE_DEVICES is {os.environ.get('CUDA_VISIBLE_DEVICES')!r}): use "
            f"--num-gpus {device_count}, or MODEL.DEVICE cpu to train on the CPU."
        )


def check_process_group(device: str):
    """
    A worker's process group can reduce tensors of its model's `device`: a CPU model in an NCCL
    group (a launcher that saw GPUs, for workers told ``MODEL.DEVICE cpu``) fails at its first
    all-reduce; refused here, before anything is built, with what to do.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    backend, expected = dist.get_backend(), process_group_backend(device)
    if backend == "nccl" and expected != "nccl":
        raise ValueError(
            f"MODEL.DEVICE {device}, but the workers' process group uses NCCL (their launcher saw "
            "GPUs), which reduces no CPU tensors. Hide the GPUs from a CPU run "
            "(CUDA_VISIBLE_DEVICES= before the command: the workers then meet with gloo) or "
            "train on them (MODEL.DEVICE cuda)."
        )
