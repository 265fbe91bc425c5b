"""
A long training that records memory and speed as it goes, to show whether either drifts (a leak
in the model, the data-loader workers or the loop). tools/long_run.py is its command line.

Every `interval` iterations :class:`ResourceMonitor` records the iterations/s since the last
record and the memory of the main process and of its data-loader workers: RSS, and PSS, which
counts the pages that forked workers share with the main process once rather than in each.
:func:`run_long_training` then prints the table, writes it as CSV and reports the growth after
warm-up as MiB per 1000 iterations (least-squares slope) and the speed of the first and last
thirds. Linux only (reads /proc).
"""

import csv
import math
import os
import time
from collections.abc import Sequence

from detectron2.engine import HookBase, default_argument_parser

from ..engine import Trainer, setup

__all__ = [
    "COLUMNS",
    "ResourceMonitor",
    "memory_sample",
    "data_loader_workers",
    "growth_per_1000",
    "summarize",
    "format_report",
    "write_csv",
    "shapes_overrides",
    "run_long_training",
]

COLUMNS = (
    "iteration",
    "elapsed_s",
    "iters_per_s",
    "main_rss_mib",
    "main_pss_mib",
    "workers",
    "workers_rss_mib",
    "workers_pss_mib",
    "total_pss_mib",
)


def process_memory_mib(pid: int) -> tuple:
    """(RSS, PSS) of process `pid` in MiB, from /proc/<pid>/smaps_rollup (kB values)."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key] = int(rest.split()[0]) / 1024
    return values["Rss"], values["Pss"]


def _command_line(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def data_loader_workers(pid: int) -> list:
    """
    PIDs of the data-loader workers of `pid`: its descendants forked with its own command line.
    Other children, such as Inductor's compile workers (started with a command of their own),
    are left out: they are not part of the data pipeline and start and stop on their own.
    """
    own = _command_line(pid)
    workers = []
    for child in child_processes(pid):
        try:
            if _command_line(child) == own:
                workers.append(child)
        except OSError:
            continue  # exited meanwhile
    return workers


def child_processes(pid: int) -> list:
    """PIDs of all descendants of `pid` (data-loader workers, compile workers)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return sorted(found)


def memory_sample(pid: int, exclude=frozenset()) -> dict:
    """Memory of `pid` and of its data-loader workers, leaving out the PIDs in `exclude`."""
    main_rss, main_pss = process_memory_mib(pid)
    workers_rss = workers_pss = 0.0
    workers = 0
    for child in set(data_loader_workers(pid)) - set(exclude):
        try:
            rss, pss = process_memory_mib(child)
        except OSError:
            continue  # exited meanwhile
        workers, workers_rss, workers_pss = workers + 1, workers_rss + rss, workers_pss + pss
    return {
        "main_rss_mib": main_rss,
        "main_pss_mib": main_pss,
        "workers": workers,
        "workers_rss_mib": workers_rss,
        "workers_pss_mib": workers_pss,
        "total_pss_mib": main_pss + workers_pss,
    }


class ResourceMonitor(HookBase):
    """Records a row of :data:`COLUMNS` every `interval` iterations."""

    def __init__(self, interval: int):
        self.interval = interval
        self.rows = []

    def before_train(self):
        self._start = self._last_time = time.perf_counter()
        self._last_iteration = self.trainer.start_iter
        # Forked processes from before this training (e.g. of an earlier run in the same
        # process) are not this run's workers.
        self._earlier_children = frozenset(data_loader_workers(os.getpid()))

    def after_step(self):
        done = self.trainer.iter + 1
        if done % self.interval:
            return
        now = time.perf_counter()
        row = {
            "iteration": done,
            "elapsed_s": now - self._start,
            "iters_per_s": (done - self._last_iteration) / (now - self._last_time),
            **memory_sample(os.getpid(), self._earlier_children),
        }
        self.rows.append(row)
        self._last_time, self._last_iteration = now, done


def growth_per_1000(iterations: list, values: list) -> float:
    """Least-squares slope of `values` over `iterations`, per 1000 iterations (nan if < 2)."""
    n = len(iterations)
    if n < 2:
        return math.nan
    mean_x, mean_y = sum(iterations) / n, sum(values) / n
    var_x = sum((x - mean_x) ** 2 for x in iterations)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(iterations, values))
    return 1000 * cov / var_x


def summarize(rows: list, warmup_iters: int) -> dict:
    """Growth of each memory column (MiB / 1000 iterations) and mean speed of the first and last
    thirds of the records after `warmup_iters`."""
    steady = [r for r in rows if r["iteration"] > warmup_iters]
    iterations = [r["iteration"] for r in steady]
    summary = {"samples": len(steady), "from_iteration": iterations[0] if steady else None}
    for column in ("main_rss_mib", "workers_rss_mib", "total_pss_mib"):
        summary[column] = growth_per_1000(iterations, [r[column] for r in steady])
    third = max(1, len(steady) // 3)
    speeds = [r["iters_per_s"] for r in steady]
    summary["first_iters_per_s"] = sum(speeds[:third]) / third if steady else math.nan
    summary["last_iters_per_s"] = sum(speeds[-third:]) / third if steady else math.nan
    return summary


def format_report(rows: list, summary: dict) -> str:
    """The rows as a fixed-width table, then a line of the growth and speed in `summary`."""
    lines = ["  ".join(f"{c:>15}" for c in COLUMNS)]
    for row in rows:
        lines.append("  ".join(_cell(row[c]) for c in COLUMNS))
    lines.append(
        f"Growth after warm-up ({summary['samples']} records from iteration "
        f"{summary['from_iteration']}), MiB per 1000 iterations: main RSS "
        f"{summary['main_rss_mib']:+.2f}, workers RSS {summary['workers_rss_mib']:+.2f}, total "
        f"PSS {summary['total_pss_mib']:+.2f}. Speed: {summary['first_iters_per_s']:.2f} it/s "
        f"(first third) -> {summary['last_iters_per_s']:.2f} it/s (last third)."
    )
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:>15}" if isinstance(value, int) else f"{value:>15.2f}"


def write_csv(rows: list, path: str):
    """The rows as CSV with a header of :data:`COLUMNS`."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def shapes_overrides(
    *, image_size: int, batch: int, max_iter: int, num_workers: int, output_dir: str
) -> list:
    """KEY VALUE overrides for a long run on the embedded shapes dataset: square images of
    `image_size`, no evaluation or visualisation, one checkpoint at the end."""
    size = str(image_size)
    return [
        "DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE", size,
        "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", size,
        "SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", str(max_iter),  # only model_final.pth: no disk churn
        "DATALOADER.NUM_WORKERS", str(num_workers),
        "DATASETS.TEST", "()", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
        "OUTPUT_DIR", output_dir,
    ]  # fmt: skip


def run_long_training(
    config_file: str, opts: Sequence[str], *, interval: int, warmup_iters: int, csv_path: str = ""
) -> dict:
    """
    Train with the plug-in's ``setup`` and ``Trainer`` on `config_file` with `opts` (KEY VALUE
    overrides), recording a row every `interval` iterations; print the report, write the rows as
    CSV to `csv_path` (default OUTPUT_DIR/long_run.csv) and return :func:`summarize`'s summary.
    """
    train_args = default_argument_parser().parse_args(["--config-file", config_file, *opts])
    cfg = setup(train_args)
    trainer = Trainer(cfg)
    monitor = ResourceMonitor(interval)
    trainer.register_hooks([monitor])
    trainer.resume_or_load(resume=False)
    trainer.train()
    summary = summarize(monitor.rows, warmup_iters)
    print(format_report(monitor.rows, summary))
    csv_path = csv_path or os.path.join(cfg.OUTPUT_DIR, "long_run.csv")
    write_csv(monitor.rows, csv_path)
    print(f"Wrote {csv_path}")
    return summary
