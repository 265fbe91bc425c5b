"""retina_plugin.benchmark.long_run and tools/long_run.py: a few iterations with 2 data-loader
workers give one record per interval, with the workers' memory, a CSV and the growth report; the
growth is a least-squares slope."""

import csv
import math
import os
import subprocess
import sys

import pytest

from retina_plugin.benchmark import long_run
from tests.utils import REPO_ROOT


def test_growth_is_the_least_squares_slope_per_1000_iterations():
    assert long_run.growth_per_1000([1000, 2000, 3000], [100.0, 101.0, 102.0]) == pytest.approx(1.0)
    # Noise around a flat line: slope of (0, 2, 0, 2) over 100..400 is 0.4 / 100 iterations.
    slope = long_run.growth_per_1000([100, 200, 300, 400], [0.0, 2.0, 0.0, 2.0])
    assert slope == pytest.approx(4.0)
    assert math.isnan(long_run.growth_per_1000([100], [5.0]))


def test_summary_leaves_out_warm_up():
    rows = [
        {"iteration": i, "iters_per_s": s, "main_rss_mib": m, "workers_rss_mib": 10.0,
         "total_pss_mib": m + 5}
        for i, s, m in [(100, 1.0, 500.0), (200, 4.0, 300.0), (300, 5.0, 301.0), (400, 6.0, 302.0)]
    ]  # fmt: skip
    summary = long_run.summarize(rows, warmup_iters=100)
    assert summary == {
        "samples": 3,
        "from_iteration": 200,
        "main_rss_mib": pytest.approx(10.0),
        "workers_rss_mib": pytest.approx(0.0),
        "total_pss_mib": pytest.approx(10.0),
        "first_iters_per_s": 4.0,
        "last_iters_per_s": 6.0,
    }


class _Trainer:
    start_iter = iter = 0


def test_resource_monitor_records_every_interval():
    monitor = long_run.ResourceMonitor(interval=2)
    monitor.trainer = _Trainer()
    monitor.before_train()
    for iteration in range(5):
        monitor.trainer.iter = iteration
        monitor.after_step()
    assert [row["iteration"] for row in monitor.rows] == [2, 4]  # after steps 1 and 3
    for row in monitor.rows:
        assert tuple(row) == long_run.COLUMNS
        assert row["workers"] == 0 and row["workers_rss_mib"] == row["workers_pss_mib"] == 0.0
        assert 0 < row["main_pss_mib"] <= row["main_rss_mib"]
        assert row["total_pss_mib"] == row["main_pss_mib"]
        assert row["iters_per_s"] > 0
    assert 0 < monitor.rows[0]["elapsed_s"] < monitor.rows[1]["elapsed_s"]


def test_shapes_overrides_pair_keys_and_values():
    overrides = long_run.shapes_overrides(
        image_size=64, batch=2, max_iter=10, num_workers=3, output_dir="out"
    )
    pairs = dict(zip(overrides[::2], overrides[1::2]))
    assert len(pairs) * 2 == len(overrides)
    assert pairs["INPUT.MIN_SIZE_TRAIN"] == "(64,)" and pairs["INPUT.MAX_SIZE_TRAIN"] == "64"
    assert pairs["SOLVER.MAX_ITER"] == pairs["SOLVER.CHECKPOINT_PERIOD"] == "10"
    assert pairs["DATALOADER.NUM_WORKERS"] == "3" and pairs["OUTPUT_DIR"] == "out"


def _typed(row: dict) -> dict:
    return {c: (int if c in ("iteration", "workers") else float)(row[c]) for c in long_run.COLUMNS}


def test_tiny_long_run_as_users_run_it(tmp_path):
    output = tmp_path / "output"
    command = [
        sys.executable, "tools/long_run.py",
        "--max-iter", "6", "--interval", "2", "--warmup-iters", "2", "--num-workers", "2", "--batch", "1",
        "--output", str(output),
        "DATASETS.FOCAL_RETINA.SHAPES.ROOT", str(tmp_path / "shapes"),
        "DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN", "24",
        "DATASETS.FOCAL_RETINA.SHAPES.NUM_VAL", "8",
        "SOLVER.WARMUP_ITERS", "2", "MODEL.FOCAL_RETINA.COMPILE", "False",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    csv_path = os.path.join(output, "long_run.csv")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == long_run.COLUMNS
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6]
    for row in rows:
        assert int(row["workers"]) == 2  # the data-loader workers, measured
        assert 0 < float(row["workers_pss_mib"]) <= float(row["workers_rss_mib"])
        assert 100 < float(row["main_pss_mib"]) <= float(row["main_rss_mib"])
        total = float(row["main_pss_mib"]) + float(row["workers_pss_mib"])
        assert float(row["total_pss_mib"]) == pytest.approx(total)
        assert float(row["iters_per_s"]) > 0
    rows = [_typed(row) for row in rows]
    summary = long_run.summarize(rows, warmup_iters=2)
    assert summary["samples"] == 2 and summary["from_iteration"] == 4
    printed = result.stdout
    assert " ".join(long_run.COLUMNS) in [" ".join(line.split()) for line in printed.splitlines()]
    assert "Growth after warm-up (2 records from iteration 4), MiB per 1000 iterations: " in printed
    # The printed report is the package's report of the rows in the CSV (which keeps floats exact).
    assert long_run.format_report(rows, summary) + f"\nWrote {csv_path}\n" in printed
