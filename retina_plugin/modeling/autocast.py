"""Mixed precision for FocalRetinaNet: which dtype autocast uses, and the convolutions that must
stay float32 under CPU bfloat16 autocast.

The convolutions: on the CPU (torch 2.14.1, oneDNN 3.12), the **weight gradient** of a bfloat16
convolution whose stride is larger than its input (a kernel wider than 1 with, e.g., stride 2 over
a 1-pixel-wide map) is garbage: values of 1e22 to 1e36 or inf, different on each call, as if read
from uninitialised memory (the forward pass and the input gradient are right). In RetinaNet
this is P7 = conv3x3/s2(ReLU(P6)) as soon as P6 is one pixel wide, i.e. for images up to 64 px
wide: one SGD step then makes P7's weights inf, and the next step's classification loss NaN.
What the garbage is depends on what ran before in the process, which is why a bfloat16 test
failed inside the full suite and passed alone
(tests/modeling/test_autocast.py reproduces the kernel's fault and checks the cure).

Such convolutions (only ever a few pixels of output) run in float32 here; every other op is as
autocast makes it.
"""

import contextlib
import functools
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = [
    "AMP_DTYPES",
    "autocast",
    "cpu_has_native_bfloat16",
    "keep_float32_where_bfloat16_conv_fails",
    "resolve_amp_dtype",
]

# MODEL.FOCAL_RETINA.AMP_DTYPE -> dtype ("auto" and "native" depend on the device: see
# resolve_amp_dtype).
AMP_DTYPES = {"auto": None, "native": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX), where bfloat16
    convolutions and matrix products are faster than float32 ones. Elsewhere PyTorch emulates
    bfloat16, which is slower than float32 (measured: docs/PERFORMANCE.md)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


@functools.cache
def _cuda_has_native_bfloat16() -> bool:
    # Compute capability 8.0 (Ampere) and later; what torch >= 2.3 reports with
    # is_bf16_supported(including_emulation=False).
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def resolve_amp_dtype(
    amp_dtype: Optional[str], device_type: str, native_cpu_bfloat16: Optional[bool] = None
) -> Optional[torch.dtype]:
    """
    The autocast dtype of MODEL.FOCAL_RETINA.AMP_DTYPE `amp_dtype` on `device_type`, or None for
    full float32 (also for `amp_dtype` None, i.e. SOLVER.AMP.ENABLED off):

    * "bfloat16", "float16": that dtype;
    * "auto": bfloat16 on the CPU, float16 on CUDA;
    * "native": the 16-bit type the device computes fastest, or None where there is none:
      bfloat16 on CUDA GPUs that support it (Ampere and later; no gradient scaling needed),
      float16 on older ones, bfloat16 on a CPU with AVX512-BF16 or AMX, and None (float32) on
      other CPUs. `native_cpu_bfloat16` overrides the CPU's answer (tests).
    """
    if amp_dtype is None:
        return None
    if amp_dtype == "native":
        if device_type == "cuda":
            return torch.bfloat16 if _cuda_has_native_bfloat16() else torch.float16
        if native_cpu_bfloat16 is None:
            native_cpu_bfloat16 = cpu_has_native_bfloat16()
        return torch.bfloat16 if device_type == "cpu" and native_cpu_bfloat16 else None
    return AMP_DTYPES[amp_dtype] or (torch.float16 if device_type == "cuda" else torch.bfloat16)


def autocast(amp_dtype: Optional[str], device_type: str):
    """``torch.autocast`` for MODEL.FOCAL_RETINA.AMP_DTYPE `amp_dtype` on `device_type`; a null
    context where it resolves to full precision (:func:`resolve_amp_dtype`)."""
    dtype = resolve_amp_dtype(amp_dtype, device_type)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def _stride_exceeds_input(conv: nn.Conv2d, x: Tensor) -> bool:
    return any(
        kernel > 1 and stride > size
        for kernel, stride, size in zip(conv.kernel_size, conv.stride, x.shape[-2:])
    )


def _in_cpu_bfloat16_autocast(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def _enter_float32(conv: nn.Conv2d, args: tuple):
    x = args[0]
    if not (_in_cpu_bfloat16_autocast(x) and _stride_exceeds_input(conv, x)):
        return None
    context = torch.autocast("cpu", enabled=False)
    context.__enter__()
    conv._float32_contexts.append(context)
    return (x.float(),) + tuple(args[1:])


def _exit_float32(conv: nn.Conv2d, args: tuple, output):
    if conv._float32_contexts:  # entered by _enter_float32 for this call
        conv._float32_contexts.pop().__exit__(None, None, None)
    return None


def keep_float32_where_bfloat16_conv_fails(model: nn.Module, enabled: bool = True):
    """
    Make every strided ``nn.Conv2d`` of `model` run in float32 on inputs narrower (or lower) than
    its stride while CPU bfloat16 autocast is on (see the module docstring); a no-op otherwise.
    ``enabled=False`` removes that again (FocalRetinaNet keeps it in training only: inference
    computes no weight gradient, and TorchScript cannot compile these hooks). Parameters and
    their names are untouched, so checkpoints are unaffected.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1:
            for handle in module.__dict__.pop("_float32_hooks", ()):
                handle.remove()
            if enabled:
                module._float32_contexts = []
                module._float32_hooks = (
                    module.register_forward_pre_hook(_enter_float32),
                    module.register_forward_hook(_exit_float32, always_call=True),
                )
