"""
The tables of a sweep, rewritten from the settings' folders after every setting:
OUTPUT/results.md, OUTPUT/results.csv and OUTPUT/results.png.
"""

from __future__ import annotations

import csv
import math
import os

from .folder import LOG_FILE, read_results, training_seconds, wall_seconds
from .grid import Grid, short_name
from .plan import PlannedSetting
from .plot import plot_results
from .values import format_value

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def varied_keys(plan: list[PlannedSetting]) -> list[str]:
    """The overridden keys, in the order they first appear."""
    keys = []
    for planned in plan:
        keys += [key for key, _ in planned.setting.overrides if key not in keys]
    return keys


def result_rows(plan: list[PlannedSetting]) -> list[dict]:
    """One row per setting: name, value of each varied key, metrics, times, status, log."""
    rows = []
    for planned in plan:
        metrics = read_results(planned.folder) if planned.state == "done" else None
        status = "done" if metrics is not None else planned.outcome or "not run"
        row = {"setting": planned.setting.name}
        row.update({key: planned.config[key] for key in varied_keys(plan)})
        row.update({metric: (metrics or {}).get(metric) for metric in METRICS})
        row["train_s"] = training_seconds(planned.folder)
        row["wall_s"] = wall_seconds(planned.folder)
        row["status"] = status
        row["log"] = planned.log or os.path.join(planned.folder, LOG_FILE)
        rows.append(row)
    return rows


def format_metric(value) -> str:
    """A metric to one decimal; '-' for a missing or NaN one."""
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def format_duration(seconds) -> str:
    """'42 s' under a minute, else '1.5 min'; '-' when unknown."""
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def markdown_table(rows: list[dict], keys: list[str]) -> str:
    """The Markdown table: setting, the varied keys, METRICS and train time; a row per setting."""
    header = ["setting", *(short_name(k) for k in keys), *METRICS, "train time"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        if row["status"] == "done":
            metrics = [format_metric(row[m]) for m in METRICS]
        else:
            metrics = [row["status"].upper()] + ["-"] * (len(METRICS) - 1)
        cells = [row["setting"], *(format_value(row[k]) for k in keys), *metrics]
        lines.append("| " + " | ".join(cells + [format_duration(row["train_s"])]) + " |")
    return "\n".join(lines)


def write_markdown(rows: list[dict], keys: list[str], base: str, path: str):
    """Write the Markdown table, what its columns mean, and the logs of unfinished settings."""
    notes = [
        f"Base config: `{os.path.relpath(base)}`. Metrics: COCOEvaluator bbox on DATASETS.TEST[0] "
        '(APl is `-` when no object is large). Train time: Detectron2\'s "Total training time" '
        "(training loop only), summed over runs.",
    ]
    notes += [
        f"- {r['setting']}: {r['status']}; log: `{r['log']}`" for r in rows if r["status"] != "done"
    ]
    with open(path, "w") as f:
        f.write(markdown_table(rows, keys) + "\n\n" + "\n".join(notes) + "\n")


def write_csv(rows: list[dict], keys: list[str], path: str):
    """Write every row in full: the varied keys, METRICS, both times, status and log."""
    columns = ["setting", *keys, *METRICS, "train_s", "wall_s", "status", "log"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            values = {**row, **{k: format_value(row[k]) for k in keys}}
            writer.writerow({c: "" if values[c] is None else values[c] for c in columns})


def write_reports(plan: list[PlannedSetting], grid: Grid, base: str, output: str):
    """Rewrite OUTPUT/results.md, results.csv and results.png from the settings' folders."""
    os.makedirs(output, exist_ok=True)
    rows, keys = result_rows(plan), varied_keys(plan)
    write_markdown(rows, keys, base, os.path.join(output, "results.md"))
    write_csv(rows, keys, os.path.join(output, "results.csv"))
    title = f"{os.path.basename(os.path.normpath(output))} ({os.path.basename(base)})"
    path = os.path.join(output, "results.png")
    plot_results(rows, keys, grid.x_key, grid.series_keys, path, title)
