"""
A setting's folder (its OUTPUT_DIR): what it was trained with, its runs, and its results, which
tell whether the setting is new, to resume, done, or trained with another config than it has now.
"""

from __future__ import annotations

import datetime
import json
import os
import re

import yaml

RECORD_FILE = "setting.yaml"  # the setting's config, written before it first trains
RUNS_FILE = "runs.jsonl"  # one line per training run: start, seconds, exit status
LOG_FILE = "ablate.log"  # train_net.py's output, every run appended
SWEEP_FILE = "sweep.json"  # in OUTPUT (the sweep's folder): ablate.py's arguments, for --collect
TOTAL_TRAINING_TIME = re.compile(r"Total training time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


def read_results(folder: str) -> dict | None:
    """The bbox metrics of folder/final_results.json; None while it is missing or incomplete."""
    try:
        with open(os.path.join(folder, "final_results.json")) as f:
            results = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if isinstance(results, dict) and "bbox" not in results and results:
        results = next(iter(results.values()))  # several test sets: DATASETS.TEST[0]'s
    bbox = results.get("bbox") if isinstance(results, dict) else None
    return bbox if isinstance(bbox, dict) and "AP" in bbox else None


def folder_state(folder: str, config: dict) -> tuple[str, list[str]]:
    """("new" | "resume" | "done" | "changed", the differences that make it "changed")."""
    if not os.path.isdir(folder) or not os.listdir(folder):
        return "new", []
    record = os.path.join(folder, RECORD_FILE)
    if not os.path.isfile(record):
        return "changed", [f"it has no {RECORD_FILE}, so what it was trained with is unknown"]
    with open(record) as f:
        stored = (yaml.safe_load(f) or {}).get("config", {})
    # Keys only one side has were added or removed by a code change, with their defaults.
    differences = [
        f"{key} = {stored[key]!r} there, {config[key]!r} now"
        for key in sorted(stored.keys() & config.keys())
        if stored[key] != config[key]
    ]
    if differences:
        return "changed", differences
    return ("done" if read_results(folder) is not None else "resume"), []


def write_record(folder: str, base: str, overrides: list[str], config: dict):
    """Write folder/setting.yaml: the base config, the KEY VALUE overrides and the full config."""
    record = {
        "base": base,
        "overrides": dict(zip(overrides[0::2], overrides[1::2])),
        "config": config,
    }
    with open(os.path.join(folder, RECORD_FILE), "w") as f:
        f.write("# Written by tools/ablate.py: the config this folder trains with.\n")
        yaml.safe_dump(record, f, sort_keys=False)


def append_run(folder: str, start: float, seconds: float, returncode: int):
    """Add a training run to folder/runs.jsonl."""
    run = {"start": start, "seconds": round(seconds, 1), "returncode": returncode}
    with open(os.path.join(folder, RUNS_FILE), "a") as f:
        f.write(json.dumps(run) + "\n")


def move_aside(folder: str) -> str:
    """Rename `folder` to ``<folder>.replaced-<date>-<time>``; returns the new name."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    destination = f"{folder}.replaced-{stamp}"
    os.rename(folder, destination)
    return destination


def training_seconds(folder: str) -> float | None:
    """Detectron2's "Total training time" (the training loop, without the final evaluation),
    summed over the runs in folder/log.txt; None without one."""
    try:
        with open(os.path.join(folder, "log.txt")) as f:
            matches = TOTAL_TRAINING_TIME.findall(f.read())
    except FileNotFoundError:
        return None
    if not matches:
        return None
    return sum(int(d or 0) * 86400 + int(h) * 3600 + int(m) * 60 + int(s) for d, h, m, s in matches)


def wall_seconds(folder: str) -> float | None:
    """Seconds of all of ablate.py's runs of the setting: start-up, training and evaluation."""
    try:
        with open(os.path.join(folder, RUNS_FILE)) as f:
            return sum(json.loads(line)["seconds"] for line in f if line.strip())
    except FileNotFoundError:
        return None


def save_command(output: str, argv: list[str]):
    """Record the sweep's command line in OUTPUT/sweep.json (what --collect reads back)."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, SWEEP_FILE), "w") as f:
        json.dump({"argv": list(argv), "cwd": os.getcwd()}, f, indent=1)


def load_command(output: str) -> list[str]:
    """The command line recorded by save_command; changes to the folder it ran in (its
    relative paths are relative to it)."""
    path = os.path.abspath(os.path.join(output, SWEEP_FILE))
    try:
        with open(path) as f:
            recorded = json.load(f)
            os.chdir(recorded["cwd"])
            return recorded["argv"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist: --collect reads the sweep written there by "
            "'ablate.py ... --output OUTPUT'. Run the sweep command itself instead."
        ) from None
