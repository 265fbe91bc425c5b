"""
The plan of a sweep: every setting checked and resolved, with its folder, its train_net.py
command and its folder's state, before anything trains.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence

from .folder import folder_state, move_aside
from .grid import Grid, Setting
from .overrides import check_key, flatten_config, resolve_setting


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
    outcome: str = ""  # after this run: "", "failed", "not run"; on SLURM "queued", "running"...
    log: str = ""  # where its training logs (default: its folder's ablate.log)


def plan_settings(
    base: str,
    opts: list[tuple[str, str]],
    grid: Grid,
    output: str,
    train_command: Sequence[str],
    num_gpus: int = 1,
) -> list[PlannedSetting]:
    """
    Validate every setting and find what its folder holds, before anything trains.

    `train_command` runs train_net.py, e.g. ``[sys.executable, "train_net.py"]``; each setting's
    command appends ``--config-file BASE --resume OUTPUT_DIR OUTPUT/<setting> KEY VALUE ...``.
    """
    for key, _ in opts:
        if key == "OUTPUT_DIR":
            raise ValueError("--opts OUTPUT_DIR: ablate.py sets it per setting; use --output.")
    plan = []
    for setting in grid.settings:
        if any(key == "OUTPUT_DIR" for key, _ in setting.overrides):
            raise ValueError(f"{setting.where}: OUTPUT_DIR is set per setting; use --output.")
        config_file = setting.config_file or base
        cfg, texts = resolve_setting(config_file, opts, setting)
        folder = os.path.join(os.path.abspath(output), setting.name)
        command = [*train_command, "--config-file", config_file, "--resume"]
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


def print_plan(plan: list[PlannedSetting]):
    """Print each setting, what is to be done with it, and its command."""
    labels = {"new": "to train", "resume": "to resume", "done": "done, skipped"}
    for planned in plan:
        label = labels.get(planned.state, "config changed: to move aside and train again")
        print(f"{planned.setting.name}: {label}\n    {shlex.join(planned.command)}")
