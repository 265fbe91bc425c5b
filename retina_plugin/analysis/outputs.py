"""What the analyses give back and write: their report, figures drawn without a display, and
CSV tables of curves."""

import csv
import os
from typing import NamedTuple, Union

from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["AnalysisReport", "save_figure", "write_curves_csv", "save_curves"]


class AnalysisReport(NamedTuple):
    """An analysis's result: `data` its values (JSON-able), `text` the report as a tool prints
    it, `paths` the files it wrote."""

    data: Union[dict, list]
    text: str
    paths: list[str]


def save_figure(figure: Figure, path: str):
    """Lay `figure` out and write it to `path` (its folder made if missing); the format is the
    extension's. A bare :class:`Figure` needs no pyplot backend (no display, no global state)."""
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)


def write_curves_csv(path: str, x_name: str, x: Tensor, curves: dict[str, Tensor]):
    """A CSV with a column `x_name` of (P,) `x` (4 decimals) and one column per (P,) curve
    (6 significant digits), headed by its key."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([x_name] + list(curves))
        for i, value in enumerate(x.tolist()):
            writer.writerow(
                [f"{value:.4f}"] + [f"{curve[i].item():.6g}" for curve in curves.values()]
            )


def save_curves(figure: Figure, path: str, x_name: str, x: Tensor, curves: dict[str, Tensor]):
    """`figure` written to `path`, and the plotted `curves` against `x` beside it, as a CSV of
    the same name (see :func:`write_curves_csv`). Returns the CSV's path."""
    save_figure(figure, path)
    csv_path = os.path.splitext(path)[0] + ".csv"
    write_curves_csv(csv_path, x_name, x, curves)
    return csv_path
