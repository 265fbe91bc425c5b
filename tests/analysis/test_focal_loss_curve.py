"""Figure 1 (retina_plugin.analysis.focal_loss_curve, tools/plot_focal_loss.py)."""

import csv
import math

import pytest
import torch

from retina_plugin.analysis import focal_loss_curves
from tests.analysis.inputs import run_tool


def test_focal_loss_curves_by_hand():
    p_t, curves = focal_loss_curves(gammas=(0.0, 2.0, 5.0), num_points=4)
    assert p_t.tolist() == [0.25, 0.5, 0.75, 1.0]
    # FL(p_t) = -(1 - p_t)^gamma log(p_t), no alpha.
    for gamma, curve in curves.items():
        for p, loss in zip(p_t.tolist(), curve.tolist()):
            assert loss == pytest.approx(-((1 - p) ** gamma) * math.log(p), abs=1e-12)
    # gamma = 2 cuts the loss of an example at p_t = 0.75 by 16x against cross entropy.
    assert curves[0.0][2] / curves[2.0][2] == pytest.approx(16.0)


def test_plot_writes_png_and_csv(tmp_path):
    output = tmp_path / "figure" / "fl.png"
    out = run_tool("plot_focal_loss", "--output", output, "--gammas", "0", "2", "--points", "10")
    assert out == f"wrote {output}, {tmp_path / 'figure' / 'fl.csv'}\n"
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "figure" / "fl.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["p_t", "gamma=0", "gamma=2"]
    assert len(rows) == 11 and rows[5][0] == "0.5000"
    assert float(rows[5][1]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(rows[5][2]) == pytest.approx(0.25 * math.log(2), rel=1e-5)
    assert torch.isfinite(torch.tensor([float(r[2]) for r in rows[1:]])).all()


def test_plot_writes_under_output_by_default(tmp_path):
    assert run_tool("plot_focal_loss", cwd=tmp_path) == (
        "wrote output/focal_loss.png, output/focal_loss.csv\n"
    )
    with open(tmp_path / "output" / "focal_loss.csv") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["p_t"] + [f"gamma={g}" for g in ("0", "0.5", "1", "2", "5")]
    assert len(rows) == 400 and rows[-1][0] == "1.0000"
