"""The plot of a sweep: AP, AP50 and AP75 against the plotted key, or bars per setting."""

from __future__ import annotations

from .grid import short_name, symbol
from .values import format_value, is_number

PLOTTED_METRICS = ("AP", "AP50", "AP75")


def plot_results(rows, keys, x_key: str | None, series_keys: list[str], path: str, title: str):
    """AP, AP50 and AP75 against x_key, a line per series; a bar chart when x is not numeric."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return
    figure, axes = plt.subplots(1, len(PLOTTED_METRICS), figsize=(12, 3.8), dpi=100)
    if x_key and all(is_number(r[x_key]) for r in done):
        # Keys that vary along a line (alpha paired with gamma) label its points.
        point_keys = [
            k for k in keys
            if k != x_key and k not in series_keys and len({format_value(r[k]) for r in done}) > 1
        ]  # fmt: skip
        plot_lines(axes, done, x_key, series_keys, point_keys)
    else:
        plot_bars(axes, done)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_lines(axes, rows, x_key: str, series_keys: list[str], point_keys: list[str]):
    """A line per series on each axis, its points labelled with the values of `point_keys`."""
    series = {}
    for row in rows:
        label = ", ".join(f"{short_name(k)}={format_value(row[k])}" for k in series_keys)
        series.setdefault(label, []).append(row)
    for axis, metric in zip(axes, PLOTTED_METRICS):
        for label, members in series.items():
            members = sorted(members, key=lambda r: r[x_key])
            xs, ys = [r[x_key] for r in members], [r[metric] for r in members]
            axis.plot(xs, ys, marker="o", label=label or None)
            for row, x, y in zip(members, xs, ys) if point_keys else ():
                text = ", ".join(f"{symbol(k)}={format_value(row[k])}" for k in point_keys)
                axis.annotate(text, (x, y), fontsize=7, xytext=(2, 4), textcoords="offset points")
        axis.set_xlabel(short_name(x_key))
        axis.set_ylabel(metric)
        axis.margins(y=0.15)  # room for the point labels
        axis.grid(alpha=0.3)
    if any(series):
        axes[0].legend(fontsize=8)


def plot_bars(axes, rows):
    """A bar per setting on each axis, named after it."""
    names = [r["setting"] for r in rows]
    for axis, metric in zip(axes, PLOTTED_METRICS):
        bars = axis.bar(range(len(rows)), [r[metric] for r in rows])
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
        axis.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3, axis="y")
