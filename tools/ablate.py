#!/usr/bin/env python
"""
Ablation sweeps as in the paper's Table 1: train every setting of a grid with train_net.py,
evaluate each with COCOEvaluator, and write a table of AP, AP50, AP75, APs, APm and APl.

    # named settings from a grid file (the shapes grids name their base config themselves)
    python tools/ablate.py --grid configs/Ablations/shapes/gamma_sweep.yaml \\
        --output output/ablations/gamma_sweep
    # the cartesian product of swept keys on a base config, plus KEY VALUE for every setting
    python tools/ablate.py --config-file configs/Ablations/shapes/Base-Shapes-Ablation.yaml \\
        --sweep MODEL.RETINANET.FOCAL_LOSS_GAMMA=0,1,2 \\
        --sweep MODEL.RETINANET.FOCAL_LOSS_ALPHA=0.25,0.5 \\
        --output output/ablations/gamma_x_alpha SOLVER.MAX_ITER 400

Every setting trains in a process of its own,
``train_net.py --config-file BASE --resume OUTPUT_DIR OUTPUT/<setting> KEY VALUE ...``, so that
running the sweep again continues an interrupted setting from its last checkpoint and skips a
finished one (one whose OUTPUT/<setting>/final_results.json holds bbox metrics).
OUTPUT/<setting>/setting.yaml records the config a setting was trained with: a setting whose
config has changed since is refused before anything trains (or, with --redo-changed, its folder
is moved aside and it trains again). Every override is checked first: each key must exist, each
value must merge, and each setting's model must build.

After every setting the tables are rewritten: OUTPUT/results.md, OUTPUT/results.csv and
OUTPUT/results.png (AP, AP50 and AP75 against the plotted key, one line per series; a bar chart
when no numeric key is plotted).
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import datetime
import difflib
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PLOTTED_METRICS = ("AP", "AP50", "AP75")
# Column names of well-known keys, as the paper's tables name them.
SHORT_NAMES = {
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": "gamma",
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": "alpha",
    "MODEL.FOCAL_RETINA.LOSS_NAME": "loss",
    "MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE": "scales",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": "ratios",
}
GRID_FILE_KEYS = ("base", "x", "series", "settings")
# A setting's name is its folder's name and a cell of a Markdown table.
SETTING_NAME = re.compile(r"^[^./\\|\s][^/\\|\s]*$")
RECORD_FILE = "setting.yaml"  # the setting's config, written before it first trains
RUNS_FILE = "runs.jsonl"  # one line per training run: start, seconds, exit status
LOG_FILE = "ablate.log"  # train_net.py's output, every run appended
TOTAL_TRAINING_TIME = re.compile(r"Total training time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


@dataclasses.dataclass
class Setting:
    """One row of the table: a name and its (KEY, VALUE) overrides of the base config."""

    name: str
    overrides: list[tuple[str, object]]
    where: str  # where it was defined, for error messages


@dataclasses.dataclass
class Grid:
    settings: list[Setting]
    base: str | None = None  # base config named by a grid file
    x_key: str | None = None  # plotted key
    series_keys: list[str] = dataclasses.field(default_factory=list)  # one line per value


@dataclasses.dataclass
class PlannedSetting:
    """A validated setting: its folder, command, resolved config and state."""

    setting: Setting
    folder: str
    command: list[str]
    overrides: list[str]  # KEY VALUE texts passed to train_net.py (--opts, then the setting's)
    config: dict  # flattened resolved config, OUTPUT_DIR left out
    state: str  # "new", "resume", "done" or "changed"
    differences: list[str]  # why it is "changed"
    outcome: str = ""  # after this run: "", "failed" or "not run"


# ----------------------------------------------------------------------------------------------
# Values and grids


def parse_value(text: str):
    """A command-line value as Detectron2 reads it: a Python literal, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def format_value(value) -> str:
    """The command-line text that Detectron2 reads back as `value`."""
    if isinstance(value, str):
        # Quote only a string that would otherwise read back as another type ("1", "[1]").
        return repr(value) if parse_value(value) != value else value
    return repr(value)


def split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets and quotes: 'a,[1, 2],b' -> ['a', '[1, 2]', 'b']."""
    parts, current, depth, quote = [], [], 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def parse_sweep(spec: str) -> tuple[str, list]:
    """``KEY=v1,v2,...`` -> (KEY, [v1, v2, ...]), each value read as on the command line."""
    key, equals, values = spec.partition("=")
    key = key.strip()
    if not equals or not key or not values.strip():
        raise ValueError(
            f"--sweep {spec!r} must read KEY=v1,v2,..., e.g. "
            "--sweep MODEL.RETINANET.FOCAL_LOSS_GAMMA=0,0.5,1,2,5."
        )
    texts = split_top_level(values)
    if "" in texts:
        raise ValueError(f"--sweep {spec!r} has an empty value; separate values by single commas.")
    parsed = [parse_value(text) for text in texts]
    if any(value in parsed[:i] for i, value in enumerate(parsed)):  # 1 and 1.0 are one value
        raise ValueError(f"--sweep {spec!r} lists a value twice.")
    return key, parsed


def short_name(key: str) -> str:
    return SHORT_NAMES.get(key, key.rsplit(".", 1)[-1].lower())


def symbol(key: str) -> str:
    """The paper's symbol of a key where it has one (short plot labels)."""
    return {"alpha": "α", "gamma": "γ"}.get(short_name(key), short_name(key))


def folder_name_part(value) -> str:
    """`value` as it appears in a setting's folder name: [[0.5, 1.0]] -> '0.5,1.0'."""
    text = re.sub(r"[\[\]()'\" ]", "", format_value(value))
    return re.sub(r"[^A-Za-z0-9.,=+-]", "_", text)


def check_unique_names(settings: list[Setting]):
    seen = {}
    for setting in settings:
        if setting.name in seen:
            raise ValueError(
                f"{setting.where} and {seen[setting.name]} both name the setting "
                f"{setting.name!r}: each setting needs a folder of its own."
            )
        seen[setting.name] = setting.where


def cartesian_settings(sweeps: list[tuple[str, list]]) -> list[Setting]:
    """
    Every combination of the swept values, the first key varying slowest (itertools.product
    order). Settings are named after their values, e.g. ``gamma=2.0_alpha=0.25``.
    """
    keys = [key for key, _ in sweeps]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"--sweep {key} is given twice; list all its values in one --sweep.")
    settings = []
    for values in itertools.product(*(values for _, values in sweeps)):
        overrides = list(zip(keys, values))
        name = "_".join(f"{short_name(k)}={folder_name_part(v)}" for k, v in overrides)
        settings.append(Setting(name, overrides, f"--sweep (setting {name!r})"))
    check_unique_names(settings)
    return settings


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, which would drop a copied setting whose name was not changed)."""

    def construct_mapping(self, node, deep=False):
        seen = []  # a list: keys need not be hashable here (the base class says so if not)
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            seen.append(key)
            if key in seen[:-1]:
                raise ValueError(
                    f"{key_node.start_mark.name}, line {key_node.start_mark.line + 1}: {key!r} "
                    "is given twice in the same mapping; rename or remove one."
                )
        return super().construct_mapping(node, deep=deep)


def load_grid_file(path: str) -> Grid:
    """
    Read a grid file of named settings, each a mapping of config KEY: VALUE overrides::

        base: Base-Shapes-Ablation.yaml       # optional: the base config, relative to this file
        x: MODEL.RETINANET.FOCAL_LOSS_GAMMA   # optional: the plot's x axis
        series: MODEL.FOCAL_RETINA.LOSS_NAME  # optional: one line per value (a key or a list)
        settings:
          gamma0_alpha.75:
            MODEL.RETINANET.FOCAL_LOSS_GAMMA: 0.0
            MODEL.RETINANET.FOCAL_LOSS_ALPHA: 0.75

    The file is read as plain YAML (no Python tags run). Settings keep the file's order.
    """
    with open(path) as f:
        content = yaml.load(f, Loader=UniqueKeyLoader)
    if not isinstance(content, dict) or not isinstance(content.get("settings"), dict):
        raise ValueError(f"{path}: a grid file needs a 'settings:' mapping of named settings.")
    unknown = sorted(set(content) - set(GRID_FILE_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown}; known: {GRID_FILE_KEYS}.")
    settings = [
        grid_file_setting(path, name, overrides) for name, overrides in content["settings"].items()
    ]
    if not settings:
        raise ValueError(f"{path}: 'settings:' is empty.")
    base = content.get("base")
    if base is not None:
        base = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    series = content.get("series") or []
    return Grid(settings, base, content.get("x"), [series] if isinstance(series, str) else series)


def is_grid_file(path: str) -> bool:
    """Whether `path` is a grid file of this tool rather than a train_net.py config."""
    with open(path) as f:
        content = yaml.safe_load(f)
    return isinstance(content, dict) and "settings" in content and "_BASE_" not in content


def grid_file_setting(path: str, name, overrides) -> Setting:
    where = f"{path}, setting {name!r}"
    if not isinstance(name, str) or not SETTING_NAME.match(name):
        raise ValueError(
            f"{where}: a setting name is its folder's name: no '/', '\\', '|' or spaces, and no "
            "leading '.'."
        )
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ValueError(f"{where}: must be a mapping of config KEY: VALUE overrides.")
    return Setting(name, list(overrides.items()), where)


def pair_opts(opts: list[str]) -> list[tuple[str, str]]:
    """KEY VALUE ... -> [(KEY, VALUE), ...] (the values stay text, as on train_net's line)."""
    if len(opts) % 2:
        raise ValueError(f"The KEY VALUE options {opts} have no value for {opts[-1]!r}.")
    for key in opts[0::2]:
        if key.startswith("--"):
            raise ValueError(
                f"{key} comes after the KEY VALUE options: give ablate.py's own options first."
            )
    return list(zip(opts[0::2], opts[1::2]))


# ----------------------------------------------------------------------------------------------
# Validation


def all_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        keys += all_keys(value, full + ".") if isinstance(value, dict) else [full]
    return keys


def check_key(cfg, key: str, where: str, base: str):
    """Raise, naming `where` and the closest real key, unless `key` names a config value."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            close = difflib.get_close_matches(key, all_keys(cfg), n=1, cutoff=0.8)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"{where}: {key} is not a config key (neither in {base} nor in the defaults of "
                f"Detectron2 and retina-plugin).{hint}"
            )
        node = node[part]
    if isinstance(node, dict):
        raise ValueError(
            f"{where}: {key} is a group of keys, not a value; name one of them, e.g. "
            f"{key}.{next(iter(node))}."
        )


def config_value(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def coerce_override(cfg, key: str, value):
    """An int for a float key becomes a float (Detectron2 refuses 2 where it holds 2.0)."""
    default = config_value(cfg, key)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def merge_override(cfg, key: str, text: str, where: str):
    try:
        cfg.merge_from_list([key, text])
    except (ValueError, AssertionError, KeyError) as error:
        raise ValueError(f"{where}: {key} = {text}: {error}") from None


def plain(value):
    """Config values as YAML-safe, comparable data: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flatten_config(cfg) -> dict:
    """{'MODEL.RETINANET.FOCAL_LOSS_GAMMA': 2.0, ...}, without OUTPUT_DIR (the folder's own)."""
    flat = {key: plain(config_value(cfg, key)) for key in all_keys(cfg)}
    flat.pop("OUTPUT_DIR", None)
    return flat


def check_model_builds(cfg, where: str):
    """Build the setting's model once on the CPU, so that a bad value fails before any training."""
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    try:
        build_model(cfg)
    except (ValueError, KeyError, AssertionError) as error:
        raise ValueError(f"{where}: its model does not build: {error}") from None


def resolve_setting(base: str, opts: list[tuple[str, str]], setting: Setting):
    """
    The setting's config (base file, then the pass-through opts, then its overrides) and the
    KEY VALUE texts to pass to train_net.py. Raises ValueError naming the bad key or value.
    """
    from retina_plugin import load_config

    cfg = load_config(base)
    for key, _ in opts:
        check_key(cfg, key, "--opts", base)
    texts = list(itertools.chain.from_iterable(opts))
    for key, text in opts:
        merge_override(cfg, key, text, "--opts")
    opt_keys = {key for key, _ in opts}
    for key, value in setting.overrides:
        check_key(cfg, key, setting.where, base)
        if key in opt_keys:
            raise ValueError(
                f"{setting.where}: {key} is also set by --opts for every setting; drop one of them."
            )
        text = format_value(coerce_override(cfg, key, value))
        merge_override(cfg, key, text, setting.where)
        texts += [key, text]
    if not cfg.DATASETS.TEST:
        raise ValueError(f"{setting.where}: DATASETS.TEST is empty: there is nothing to evaluate.")
    check_model_builds(cfg, setting.where)
    return cfg, texts


# ----------------------------------------------------------------------------------------------
# State of a setting's folder


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


def write_record(planned: PlannedSetting, base: str):
    record = {
        "base": base,
        "overrides": dict(zip(planned.overrides[0::2], planned.overrides[1::2])),
        "config": planned.config,
    }
    with open(os.path.join(planned.folder, RECORD_FILE), "w") as f:
        f.write("# Written by tools/ablate.py: the config this folder trains with.\n")
        yaml.safe_dump(record, f, sort_keys=False)


def move_aside(folder: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    destination = f"{folder}.replaced-{stamp}"
    os.rename(folder, destination)
    return destination


# ----------------------------------------------------------------------------------------------
# Planning and training


def plan_settings(base: str, opts, grid: Grid, output: str, num_gpus: int = 1):
    """Validate every setting and find what its folder holds, before anything trains."""
    for key, _ in opts:
        if key == "OUTPUT_DIR":
            raise ValueError("--opts OUTPUT_DIR: ablate.py sets it per setting; use --output.")
    plan = []
    for setting in grid.settings:
        if any(key == "OUTPUT_DIR" for key, _ in setting.overrides):
            raise ValueError(f"{setting.where}: OUTPUT_DIR is set per setting; use --output.")
        cfg, texts = resolve_setting(base, opts, setting)
        folder = os.path.join(os.path.abspath(output), setting.name)
        command = [sys.executable, TRAIN_NET, "--config-file", base, "--resume"]
        command += ["--num-gpus", str(num_gpus)] if num_gpus != 1 else []
        command += ["OUTPUT_DIR", folder, *texts]
        config = flatten_config(cfg)
        state, differences = folder_state(folder, config)
        plan.append(PlannedSetting(setting, folder, command, texts, config, state, differences))
    for key in ([grid.x_key] if grid.x_key else []) + grid.series_keys:
        check_key(cfg, key, "the plotted key (x or series)", base)
    return plan


def handle_changed(plan: list[PlannedSetting], redo_changed: bool, dry_run: bool):
    """Refuse changed settings (all named at once), or move their folders aside to redo them."""
    changed = [p for p in plan if p.state == "changed"]
    if changed and not redo_changed:
        lines = [
            f"- {p.setting.name} ({p.folder}): " + "; ".join(p.differences[:3])
            + (f"; and {len(p.differences) - 3} more" if len(p.differences) > 3 else "")
            for p in changed
        ]  # fmt: skip
        raise ValueError(
            "These settings were trained with another config than they have now:\n"
            + "\n".join(lines)
            + "\nDelete their folders, choose another --output, or pass --redo-changed to move "
            "them aside and train them again."
        )
    for planned in changed:
        if not dry_run:
            print(f"{planned.setting.name}: config changed; moved {move_aside(planned.folder)}")
            planned.state = "new"


def run_training(planned: PlannedSetting, base: str) -> int:
    """Train (or resume) one setting, its output appended to its log; returns the exit status."""
    os.makedirs(planned.folder, exist_ok=True)
    write_record(planned, base)
    start = time.time()
    with open(os.path.join(planned.folder, LOG_FILE), "a") as log:
        log.write(f"\n# {datetime.datetime.now().isoformat()}: {shlex.join(planned.command)}\n")
        log.flush()
        returncode = subprocess.run(
            planned.command, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    run = {"start": start, "seconds": round(time.time() - start, 1), "returncode": returncode}
    with open(os.path.join(planned.folder, RUNS_FILE), "a") as f:
        f.write(json.dumps(run) + "\n")
    return returncode


def train_all(plan, grid: Grid, base: str, output: str, keep_going: bool) -> int:
    """Train what is not done, rewriting the tables after each setting; returns the failures."""
    failures = 0
    todo = [p for p in plan if p.state != "done"]
    for index, planned in enumerate(todo, 1):
        name, log = planned.setting.name, os.path.join(planned.folder, LOG_FILE)
        verb = "resuming" if planned.state == "resume" else "training"
        print(f"[{index}/{len(todo)}] {name}: {verb} (log: {log})", flush=True)
        returncode = run_training(planned, base)
        metrics = read_results(planned.folder)
        if returncode == 0 and metrics is not None:
            planned.state = "done"
            print(f"[{index}/{len(todo)}] {name}: AP {metrics['AP']:.1f}", flush=True)
        else:
            failures += 1
            planned.outcome = "failed"
            print(f"[{index}/{len(todo)}] {name}: FAILED (exit {returncode}); log: {log}")
            if not keep_going:
                for later in todo[index:]:
                    later.outcome = "not run"
        write_reports(plan, grid, base, output)
        if failures and not keep_going:
            break
    return failures


# ----------------------------------------------------------------------------------------------
# Tables and plot


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
        row["log"] = os.path.join(planned.folder, LOG_FILE)
        rows.append(row)
    return rows


def format_metric(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def format_duration(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def markdown_table(rows: list[dict], keys: list[str]) -> str:
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


def write_markdown(rows, keys, base: str, path: str):
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


def write_csv(rows, keys, path: str):
    columns = ["setting", *keys, *METRICS, "train_s", "wall_s", "status", "log"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            values = {**row, **{k: format_value(row[k]) for k in keys}}
            writer.writerow({c: "" if values[c] is None else values[c] for c in columns})


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    names = [r["setting"] for r in rows]
    for axis, metric in zip(axes, PLOTTED_METRICS):
        bars = axis.bar(range(len(rows)), [r[metric] for r in rows])
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
        axis.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3, axis="y")


def write_reports(plan, grid: Grid, base: str, output: str):
    """Rewrite OUTPUT/results.md, results.csv and results.png from the settings' folders."""
    os.makedirs(output, exist_ok=True)
    rows, keys = result_rows(plan), varied_keys(plan)
    write_markdown(rows, keys, base, os.path.join(output, "results.md"))
    write_csv(rows, keys, os.path.join(output, "results.csv"))
    title = f"{os.path.basename(os.path.normpath(output))} ({os.path.basename(base)})"
    path = os.path.join(output, "results.png")
    plot_results(rows, keys, grid.x_key, grid.series_keys, path, title)


# ----------------------------------------------------------------------------------------------
# Command line


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train, evaluate and tabulate the settings of an ablation grid.",
        epilog="KEY VALUE pairs after the options (or after --opts) apply to every setting.",
    )
    parser.add_argument("--config-file", help="base config (default: the grid file's 'base')")
    parser.add_argument("--grid", help="grid file of named settings (see load_grid_file)")
    parser.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=v1,v2,...",
        help="a swept key; several --sweep give their cartesian product",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="folder of the settings and tables")
    parser.add_argument(
        "--x", help="plotted key (default: the grid's x, or the first numeric sweep)"
    )
    parser.add_argument("--series", nargs="+", help="keys whose values get a line each")
    parser.add_argument("--num-gpus", type=int, default=1, help="train_net.py's --num-gpus")
    parser.add_argument("--keep-going", action="store_true", help="train the rest after a failure")
    parser.add_argument(
        "--redo-changed", action="store_true",
        help="move aside the folders of settings whose config changed and train them again",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="list settings and commands only")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    parser.add_argument("trailing_opts", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def grid_from_args(args) -> Grid:
    """The grid of --grid or of the --sweep options, with the plotted keys."""
    if bool(args.grid) == bool(args.sweep):
        raise ValueError("Give either --grid FILE or one or more --sweep KEY=v1,v2,...")
    if args.grid:
        grid = load_grid_file(args.grid)
    else:
        sweeps = [parse_sweep(spec) for spec in args.sweep]
        numeric = [key for key, values in sweeps if all(is_number(v) for v in values)]
        x_key = args.x or (numeric[0] if numeric else None)
        series = [key for key, _ in sweeps if key != x_key]
        grid = Grid(cartesian_settings(sweeps), None, x_key, series)
    grid.x_key = args.x or grid.x_key
    grid.series_keys = args.series or grid.series_keys
    return grid


def print_plan(plan: list[PlannedSetting]):
    labels = {"new": "to train", "resume": "to resume", "done": "done, skipped"}
    for planned in plan:
        label = labels.get(planned.state, "config changed: to move aside and train again")
        print(f"{planned.setting.name}: {label}\n    {shlex.join(planned.command)}")


def main(argv=None) -> int:
    """Run the sweep; returns the exit status (1 when a setting failed)."""
    args = get_parser().parse_args(argv)
    grid = grid_from_args(args)
    base = args.config_file or grid.base
    if not base:
        raise ValueError("No base config: pass --config-file, or name one as 'base:' in --grid.")
    if not os.path.isfile(base):
        raise FileNotFoundError(f"The base config {base!r} does not exist.")
    base = os.path.abspath(base)
    opts = pair_opts(list(args.opts) + list(args.trailing_opts))
    plan = plan_settings(base, opts, grid, args.output, args.num_gpus)
    handle_changed(plan, args.redo_changed, args.dry_run)
    print_plan(plan)
    if args.dry_run:
        return 0
    start = time.time()
    failures = train_all(plan, grid, base, args.output, args.keep_going)
    write_reports(plan, grid, base, args.output)
    done = sum(p.state == "done" for p in plan)
    print(
        f"{done} of {len(plan)} settings done ({failures} failed) after "
        f"{(time.time() - start) / 60:.1f} min; table: {os.path.join(args.output, 'results.md')}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"ablate.py: {error}")
