"""
Overrides of the base config, checked before anything trains: each key must exist (a typo is
answered with the closest real key), each value must merge, and each setting's model must build.
"""

from __future__ import annotations

import difflib
import itertools

from detectron2.modeling import build_model

from ..config import load_config
from .grid import Setting
from .values import format_value


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


def all_keys(cfg, prefix: str = "") -> list[str]:
    """Every value's full key in `cfg`, e.g. 'MODEL.RETINANET.FOCAL_LOSS_GAMMA'."""
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        keys += all_keys(value, full + ".") if isinstance(value, dict) else [full]
    return keys


def config_value(cfg, key: str):
    """The value of the full `key` in `cfg`."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


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


def coerce_override(cfg, key: str, value):
    """An int for a float key becomes a float (Detectron2 refuses 2 where it holds 2.0)."""
    default = config_value(cfg, key)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def merge_override(cfg, key: str, text: str, where: str):
    """Merge ``key text`` into `cfg`, as train_net.py will; raises ValueError naming `where`."""
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
