"""
Settings and grids: a setting is a name (its folder's and its table row's) and the config
overrides that make it; a grid is the settings of one sweep and the keys its plot shows.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

from .values import format_value, is_number, parse_value, split_top_level

# Column names of well-known keys, as the paper's tables name them.
SHORT_NAMES = {
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": "gamma",
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": "alpha",
    "MODEL.FOCAL_RETINA.LOSS_NAME": "loss",
    "MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE": "scales",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": "ratios",
}


@dataclasses.dataclass
class Setting:
    """One row of the table: a name and its (KEY, VALUE) overrides of the base config."""

    name: str
    overrides: list[tuple[str, object]]
    where: str  # where it was defined, for error messages
    config_file: str | None = None  # its own config, in place of the sweep's base config


@dataclasses.dataclass
class Grid:
    """The settings of a sweep, the base config it may name, and the keys its plot shows."""

    settings: list[Setting]
    base: str | None = None  # base config named by a grid file
    x_key: str | None = None  # plotted key
    series_keys: list[str] = dataclasses.field(default_factory=list)  # one line per value


def short_name(key: str) -> str:
    """A key's column name: the paper's for a well-known key, else its last part in lower case."""
    return SHORT_NAMES.get(key, key.rsplit(".", 1)[-1].lower())


def symbol(key: str) -> str:
    """The paper's symbol of a key where it has one (short plot labels)."""
    return {"alpha": "α", "gamma": "γ"}.get(short_name(key), short_name(key))


def folder_name_part(value) -> str:
    """`value` as it appears in a setting's folder name: [[0.5, 1.0]] -> '0.5,1.0'."""
    text = re.sub(r"[\[\]()'\" ]", "", format_value(value))
    return re.sub(r"[^A-Za-z0-9.,=+-]", "_", text)


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


def check_unique_names(settings: list[Setting]):
    """Raise, naming both places, if two settings share a name (and so a folder)."""
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


def sweep_grid(specs: list[str], x_key: str | None = None) -> Grid:
    """
    The grid of ``KEY=v1,v2,...`` specs (their cartesian product). Plotted against `x_key`, by
    default the first key whose values are all numbers; the other keys get a line per value.
    """
    sweeps = [parse_sweep(spec) for spec in specs]
    numeric = [key for key, values in sweeps if all(is_number(v) for v in values)]
    x_key = x_key or (numeric[0] if numeric else None)
    series = [key for key, _ in sweeps if key != x_key]
    return Grid(cartesian_settings(sweeps), None, x_key, series)
