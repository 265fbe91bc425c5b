"""Timing and memory measurements shared by the benchmarks.

Candidates run interleaved (A, B, A, B, ...) and are compared by medians, since absolute times on
shared machines drift. CUDA work is asynchronous: every timed call is bracketed by a device
synchronisation. Peak memory and one-time costs are measured in a fresh process
(:func:`run_in_fresh_process`), where nothing earlier has grown the heap or filled a cache.
"""

import contextlib
import ctypes
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch

import retina_plugin

__all__ = [
    "synchronize",
    "time_interleaved",
    "first_call_overhead",
    "cpu_peak_rss",
    "peak_memory_bytes",
    "run_in_fresh_process",
    "matmul_gflop_per_s",
    "matmul_speed",
    "tf32_disabled",
    "print_machine",
]


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_interleaved(candidates: dict, repeats: int, device: str) -> dict:
    """{name: [seconds, ...]}, running the candidates in turn `repeats` times."""
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, step in candidates.items():
            times[name].append(_timed(step, device))
    return times


def first_call_overhead(calls: Sequence[Callable], device: str) -> float:
    """Seconds that the first of `calls` takes beyond the fastest later one (compilation, caches
    filled on first use). The calls should do the same work; at least two."""
    durations = [_timed(call, device) for call in calls]
    return durations[0] - min(durations[1:])


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def cpu_peak_rss(fn: Callable) -> int:
    """Peak resident memory (bytes) that `fn` adds: Linux's VmHWM, reset just before `fn`."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the baseline is low
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) * 1024


def peak_memory_bytes(fn: Callable, device: str) -> int:
    """Peak memory (bytes) that `fn` adds on `device`: allocated CUDA memory, or resident CPU
    memory (:func:`cpu_peak_rss`)."""
    if not device.startswith("cuda"):
        return cpu_peak_rss(fn)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run_in_fresh_process(module: str, argv: Sequence[str], env: dict = None) -> dict:
    """Run ``python -m module *argv`` and return the JSON object its last output line holds."""
    command = [sys.executable, "-m", module, *argv]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def matmul_gflop_per_s(size: int, seconds: float) -> float:
    """Speed of one (size x size) @ (size x size) product taking `seconds`: size^2 outputs of
    size multiply-adds each, 2 size^3 floating-point operations."""
    return 2 * size**3 / seconds / 1e9


def matmul_speed(device: str, size: int = 2048, repeats: int = 5) -> float:
    """Median float32 matmul speed (GFLOP/s) on `device` with torch's default threads and
    precision: a figure by which readers can place their own machine."""
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator).to(device) for _ in range(2))
    torch.mm(left, right)  # warm-up: allocator, BLAS/cuBLAS handles
    times = time_interleaved({"matmul": lambda: torch.mm(left, right)}, repeats, device)
    return matmul_gflop_per_s(size, statistics.median(times["matmul"]))


@contextlib.contextmanager
def tf32_disabled():
    """
    Full float32 precision for CUDA matmuls and cuDNN convolutions inside the block (TF32 keeps
    10 mantissa bits: enough to tell two memory layouts apart); the settings are restored after,
    also when the block raises. Through torch's ``fp32_precision`` settings where they exist
    (torch >= 2.9; there, reading the older ``allow_tf32`` flags after a user set the new ones
    raises), else the ``allow_tf32`` flags.
    """
    settings = _fp32_precision_settings()
    if settings is None:
        matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        saved = matmul.allow_tf32, cudnn.allow_tf32
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = saved
        return
    saved = [setting.fp32_precision for setting in settings]
    try:
        for setting in settings:
            setting.fp32_precision = "ieee"
        yield
    finally:
        for setting, value in zip(settings, saved):
            setting.fp32_precision = value


def _fp32_precision_settings():
    """torch's per-backend float32 precision settings (CUDA matmul, cuDNN convolution), or None
    before torch 2.9."""
    settings = (torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None))
    if all(hasattr(setting, "fp32_precision") for setting in settings):
        return settings
    return None


def print_machine(device: str, matmul_size: int = 2048):
    """Print torch's version and threads, the time, and the machine's float32 matmul speed on
    `device` (:func:`matmul_speed`), before any benchmark, so readers can place their own."""
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"retina_plugin at {retina_plugin.__file__}"
    )
    print(time.strftime("%Y-%m-%d %H:%M"))
    speed = matmul_speed(device, matmul_size)
    print(
        f"Machine speed: {speed:.1f} GFLOP/s, float32 matmul {matmul_size}x{matmul_size} "
        f"on {device} (median of 5)"
    )
