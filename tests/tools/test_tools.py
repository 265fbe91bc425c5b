import csv
import math

import pytest
import torch

from tools import plot_focal_loss


def test_focal_loss_curves_by_hand():
    p_t, curves = plot_focal_loss.focal_loss_curves(gammas=(0.0, 2.0, 5.0), num_points=4)
    assert p_t.tolist() == [0.25, 0.5, 0.75, 1.0]
    # FL(p_t) = -(1 - p_t)^gamma log(p_t), no alpha.
    for gamma, curve in curves.items():
        for p, loss in zip(p_t.tolist(), curve.tolist()):
            assert loss == pytest.approx(-((1 - p) ** gamma) * math.log(p), abs=1e-12)
    # gamma = 2 cuts the loss of an example at p_t = 0.75 by 16x against cross entropy.
    assert curves[0.0][2] / curves[2.0][2] == pytest.approx(16.0)


def test_plot_writes_png_and_csv(tmp_path):
    output = tmp_path / "figure" / "fl.png"
    plot_focal_loss.main(["--output", str(output), "--gammas", "0", "2", "--points", "10"])
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "figure" / "fl.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["p_t", "gamma=0", "gamma=2"]
    assert len(rows) == 11 and rows[5][0] == "0.5000"
    assert float(rows[5][1]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(rows[5][2]) == pytest.approx(0.25 * math.log(2), rel=1e-5)
    assert torch.isfinite(torch.tensor([float(r[2]) for r in rows[1:]])).all()
