"""tools/long_run.py: a few iterations with 2 data-loader workers give one record per interval,
with the workers' memory, a CSV and the growth report; the growth is a least-squares slope."""

import csv
import math

import pytest

from tools import long_run


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


def test_tiny_long_run(tmp_path, capsys):
    args = long_run.get_parser().parse_args(
        [
            "--max-iter", "6", "--interval", "2", "--warmup-iters", "2", "--num-workers", "2", "--batch", "1",
            "--output", str(tmp_path / "output"),
            "DATASETS.FOCAL_RETINA.SHAPES.ROOT", str(tmp_path / "shapes"),
            "DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN", "24",
            "DATASETS.FOCAL_RETINA.SHAPES.NUM_VAL", "8",
            "SOLVER.WARMUP_ITERS", "2", "MODEL.FOCAL_RETINA.COMPILE", "False",
        ]
    )  # fmt: skip
    summary = long_run.run(args)
    with open(tmp_path / "output" / "long_run.csv") as f:
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
    assert summary["samples"] == 2 and summary["from_iteration"] == 4
    printed = capsys.readouterr().out
    assert " ".join(long_run.COLUMNS) in [" ".join(line.split()) for line in printed.splitlines()]
    assert "Growth after warm-up (2 records from iteration 4), MiB per 1000 iterations: " in printed
