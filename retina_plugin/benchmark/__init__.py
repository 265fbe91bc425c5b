"""
Measurements of the plug-in against Detectron2 and fvcore, and of long trainings.

- :mod:`.timing`: interleaved medians, device synchronisation, peak memory, fresh-process
  probes, the float32 matmul speed of the machine, TF32 off for agreement checks.
- :mod:`.loss_speed`: the focal loss, Detectron2's path against ours, fvcore's dense against ours.
- :mod:`.model_speed`: the whole R50-FPN RetinaNet, Detectron2's against FocalRetinaNet.
- :mod:`.reference`: that pair of models with the same weights (the drop-in parity tests use it).
- :mod:`.long_run`: memory and speed recorded through a long training.
- :mod:`.probe`: the command line that loss_speed runs in fresh processes (not imported here).

tools/benchmark.py and tools/long_run.py are the command lines.
"""

from .long_run import (
    COLUMNS,
    ResourceMonitor,
    format_report,
    growth_per_1000,
    memory_sample,
    run_long_training,
    shapes_overrides,
    summarize,
    write_csv,
)
from .loss_speed import LOSS_CANDIDATES, LossProblem, bench_loss, check_loss_agreement
from .model_speed import bench_model, check_model_agreement, model_candidates
from .reference import detectron2_retinanet_pair
from .timing import (
    cpu_peak_rss,
    first_call_overhead,
    matmul_gflop_per_s,
    matmul_speed,
    peak_memory_bytes,
    print_machine,
    tf32_disabled,
    time_interleaved,
)

__all__ = [
    "COLUMNS",
    "ResourceMonitor",
    "format_report",
    "growth_per_1000",
    "memory_sample",
    "run_long_training",
    "shapes_overrides",
    "summarize",
    "write_csv",
    "LOSS_CANDIDATES",
    "LossProblem",
    "bench_loss",
    "check_loss_agreement",
    "bench_model",
    "check_model_agreement",
    "model_candidates",
    "detectron2_retinanet_pair",
    "cpu_peak_rss",
    "first_call_overhead",
    "matmul_gflop_per_s",
    "matmul_speed",
    "peak_memory_bytes",
    "print_machine",
    "tf32_disabled",
    "time_interleaved",
]
