"""
Ablation sweeps as in the paper's Table 1: train every setting of a grid with train_net.py,
evaluate each with COCOEvaluator, and tabulate AP, AP50, AP75, APs, APm and APl.

A grid is a list of named settings, each a set of config overrides: from a grid file
(``load_grid_file``) or the cartesian product of swept keys (``sweep_grid``). ``run_sweep``
checks every setting (keys, values, model build) before anything trains, then trains each in a
process of its own with the train_net.py command it is given, resumably, and rewrites
OUTPUT/results.md, results.csv and results.png after each. tools/ablate.py is its command line.
"""

from .folder import LOG_FILE, RECORD_FILE, RUNS_FILE, folder_state, read_results
from .grid import Grid, Setting, cartesian_settings, parse_sweep, short_name, sweep_grid
from .grid_file import is_grid_file, load_config_folder, load_grid_file, load_sweep
from .overrides import (
    all_keys,
    check_key,
    config_value,
    flatten_config,
    pair_opts,
    resolve_setting,
)
from .plan import PlannedSetting, handle_changed, plan_settings, print_plan
from .reports import METRICS, result_rows, write_reports
from .runner import run_sweep, run_training, train_all
from .values import format_value, parse_value, split_top_level

__all__ = [
    "Setting",
    "Grid",
    "parse_sweep",
    "cartesian_settings",
    "sweep_grid",
    "short_name",
    "load_grid_file",
    "load_config_folder",
    "load_sweep",
    "is_grid_file",
    "parse_value",
    "format_value",
    "split_top_level",
    "pair_opts",
    "all_keys",
    "config_value",
    "check_key",
    "flatten_config",
    "resolve_setting",
    "PlannedSetting",
    "plan_settings",
    "handle_changed",
    "print_plan",
    "read_results",
    "folder_state",
    "RECORD_FILE",
    "RUNS_FILE",
    "LOG_FILE",
    "METRICS",
    "result_rows",
    "write_reports",
    "run_training",
    "train_all",
    "run_sweep",
]
