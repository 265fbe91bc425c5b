"""
Grid files: named settings in a YAML file (see load_grid_file). They are not train_net.py configs
and live outside configs/ (the repository's are in sweeps/); they name their base config.
A folder of train_net.py configs is a grid too (load_config_folder).
"""

from __future__ import annotations

import glob
import os
import re

import yaml

from ..config import load_config
from .grid import Grid, Setting, sweep_grid
from .overrides import flatten_config

GRID_FILE_KEYS = ("base", "x", "series", "settings")
# A setting's name is its folder's name and a cell of a Markdown table.
SETTING_NAME = re.compile(r"^[^./\\|\s][^/\\|\s]*$")


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

        # optional: the base config, relative to this file (or absolute)
        base: ../../configs/Ablations/shapes/Base-Shapes-Ablation.yaml
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
        # Normalized: a base beside the configs is reached through "..".
        base = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), base))
    series = content.get("series") or []
    return Grid(settings, base, content.get("x"), [series] if isinstance(series, str) else series)


def is_grid_file(path: str) -> bool:
    """Whether `path` is a grid file rather than a train_net.py config."""
    with open(path) as f:
        content = yaml.safe_load(f)
    return isinstance(content, dict) and "settings" in content and "_BASE_" not in content


def grid_file_setting(path: str, name, overrides) -> Setting:
    """The setting `name` of the grid file `path`; raises ValueError for a bad name or mapping."""
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


def load_config_folder(folder: str) -> Grid:
    """
    A grid of train_net.py configs, one setting per ``*.yaml`` of `folder` (named after the file,
    trained with it as its config), such as ``configs/Ablations/Table1b-gamma-FL/``. Each
    setting's overrides are the keys whose values differ between the files (the table's
    columns; passing them again changes nothing); the plot is against the first numeric one.
    """
    paths = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    if not paths:
        raise ValueError(f"{folder} holds no *.yaml config: --configs takes a folder of configs.")
    flat = {path: flatten_config(load_config(path)) for path in paths}
    keys = [k for k in flat[paths[0]] if len({repr(f.get(k)) for f in flat.values()}) > 1]
    settings = [
        Setting(
            os.path.splitext(os.path.basename(path))[0],
            [(key, flat[path][key]) for key in keys if key in flat[path]],
            path,
            config_file=os.path.abspath(path),
        )
        for path in paths
    ]
    numeric = [k for k in keys if all(isinstance(f.get(k), (int, float)) for f in flat.values())]
    return Grid(settings, os.path.abspath(folder), numeric[0] if numeric else None, [])


def load_sweep(
    grid_file: str | None = None,
    sweep_specs: list[str] = (),
    configs_folder: str | None = None,
    config_file: str | None = None,
    x_key: str | None = None,
    series_keys: list[str] | None = None,
) -> tuple[Grid, str]:
    """(grid, base config) of ablate.py's --grid, --sweep or --configs, --config-file, --x and
    --series; the base must exist (for --configs it is the folder)."""
    if sum(map(bool, (grid_file, sweep_specs, configs_folder))) != 1:
        raise ValueError(
            "Give one of --grid FILE, --configs FOLDER or one or more --sweep KEY=v1,v2,..."
        )
    if configs_folder:
        grid = load_config_folder(configs_folder)
    elif grid_file:
        grid = load_grid_file(grid_file)
    else:
        grid = sweep_grid(list(sweep_specs), x_key)
    grid.x_key = x_key or grid.x_key
    grid.series_keys = series_keys or grid.series_keys
    if configs_folder:
        return grid, grid.base
    base = config_file or grid.base
    if not base:
        raise ValueError("No base config: pass --config-file, or name one as 'base:' in --grid.")
    if not os.path.isfile(base):
        raise FileNotFoundError(f"The base config {base!r} does not exist.")
    return grid, os.path.abspath(base)
