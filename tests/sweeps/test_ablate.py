"""retina_plugin.sweeps, tools/ablate.py (as users run it, in a process of its own),
configs/Ablations and sweeps/: every ablation config loads and builds with the paper's row values;
grid parsing and its errors; the tables of a sweep (a stand-in trainer with known metrics, then a
tiny real sweep through train_net.py); resumability and changed settings."""

import csv
import glob
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch
import yaml
from detectron2.modeling import build_model

from retina_plugin import load_config, sweeps
from retina_plugin.sweeps import runner
from tests.utils import CONFIGS_DIR, REPO_ROOT, tiny_shapes_overrides

ABLATIONS_DIR = os.path.join(CONFIGS_DIR, "Ablations")
SWEEPS_DIR = os.path.join(REPO_ROOT, "sweeps")  # the grid files
ABLATE = os.path.join(REPO_ROOT, "tools", "ablate.py")
TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
TRAIN_COMMAND = [sys.executable, TRAIN_NET]  # the one tools/ablate.py passes
QUICKSTART = os.path.join(CONFIGS_DIR, "quickstart.yaml")
SHAPES_BASE = os.path.join(ABLATIONS_DIR, "shapes", "Base-Shapes-Ablation.yaml")
GAMMA, ALPHA = "MODEL.RETINANET.FOCAL_LOSS_GAMMA", "MODEL.RETINANET.FOCAL_LOSS_ALPHA"
LOSS_NAME = "MODEL.FOCAL_RETINA.LOSS_NAME"

# file: gamma, alpha, scales per octave, aspect ratios, the paper's AP (PAPER.md; Table 1c rows
# other than 1x1, 2x3 and 3x3 are from the paper's table, flagged in their files).
RATIOS_3 = [[0.5, 1.0, 2.0]]
PAPER_ROWS = {
    **{
        f"Table1a-alpha-CE/CE_alpha{alpha}.yaml": (0.0, float(alpha), 3, RATIOS_3, ap)
        for alpha, ap in [
            ("0.10", "0.0"), ("0.25", "10.8"), ("0.50", "30.2"), ("0.75", "31.1"),
            ("0.90", "30.8"), ("0.99", "28.7"), ("0.999", "25.1"),
        ]
    },
    **{
        f"Table1b-gamma-FL/FL_gamma{gamma}_alpha{alpha}.yaml": (float(gamma), float(alpha), 3, RATIOS_3, ap)
        for gamma, alpha, ap in [
            ("0.0", "0.75", "31.1"), ("0.1", "0.75", "31.4"), ("0.2", "0.75", "31.9"),
            ("0.5", "0.50", "32.9"), ("1.0", "0.25", "33.7"), ("2.0", "0.25", "34.0"),
            ("5.0", "0.25", "32.2"),
        ]
    },
    **{
        f"Table1c-anchors/scales{scales}_ratios{len(ratios[0])}.yaml": (2.0, 0.25, scales, ratios, ap)
        for scales, ratios, ap in [
            # None: a row whose AP the config does not quote.
            (1, [[1.0]], "30.3"), (2, [[1.0]], None), (3, [[1.0]], None),
            (1, RATIOS_3, None), (2, RATIOS_3, "34.2"), (3, RATIOS_3, "34.0"),
            (4, RATIOS_3, None),
        ]
    },
}  # fmt: skip
ABLATION_FILES = sorted(
    os.path.relpath(path, ABLATIONS_DIR)
    for path in glob.glob(os.path.join(ABLATIONS_DIR, "**", "*.yaml"), recursive=True)
)
# Grid files are not train_net.py configs: they live in sweeps/, outside configs/.
GRID_FILES = sorted(
    os.path.relpath(path, SWEEPS_DIR)
    for path in glob.glob(os.path.join(SWEEPS_DIR, "**", "*.yaml"), recursive=True)
)


def test_ablation_files_found():
    expected = {"Base-Ablation-R50-FPN-600.yaml", "shapes/Base-Shapes-Ablation.yaml"}
    assert expected | set(PAPER_ROWS) <= set(ABLATION_FILES)
    assert {"shapes/gamma_sweep.yaml", "shapes/ce_vs_fl.yaml", "shapes/loss_family.yaml"} <= set(
        GRID_FILES
    )
    assert all(sweeps.is_grid_file(os.path.join(SWEEPS_DIR, name)) for name in GRID_FILES)
    configs = glob.glob(os.path.join(CONFIGS_DIR, "**", "*.yaml"), recursive=True)
    assert not [path for path in configs if sweeps.is_grid_file(path)]


@pytest.mark.parametrize("name", ABLATION_FILES)
def test_every_ablation_config_loads_and_builds(name):
    cfg = load_config(os.path.join(ABLATIONS_DIR, name))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    if cfg.MODEL.RESNETS.DEPTH > 18:  # the rows differ in loss and anchors, not the backbone
        cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS = 18, 32
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    model = build_model(cfg)
    assert type(model).__name__ == "FocalRetinaNet"
    anchors = cfg.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE * len(
        cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0]
    )
    assert model.anchor_generator.num_cell_anchors == [anchors] * 5


@pytest.mark.parametrize("name", sorted(PAPER_ROWS))
def test_paper_rows(name):
    gamma, alpha, scales, ratios, paper_ap = PAPER_ROWS[name]
    path = os.path.join(ABLATIONS_DIR, name)
    cfg = load_config(path)
    retina = cfg.MODEL.RETINANET
    assert (retina.FOCAL_LOSS_GAMMA, retina.FOCAL_LOSS_ALPHA) == (gamma, alpha)
    assert cfg.MODEL.FOCAL_RETINA.LOSS_NAME == "SigmoidFocalLoss"
    assert cfg.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE == scales
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == ratios
    assert cfg.MODEL.ANCHOR_GENERATOR.NAME == "OctaveAnchorGenerator"
    # The paper's ablation setting: R50-FPN, 600 px, 1x.
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (
        50,
        90000,
        (60000, 80000),
    )
    assert (cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST) == ((600,), 600)
    assert (cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TEST) == (1000, 1000)
    assert cfg.OUTPUT_DIR == "./output/ablations/" + name[: -len(".yaml")]
    with open(path) as f:
        header = f.read().split("_BASE_")[0]
    assert header.startswith(f"# Table {name[5:7]}, ")
    if paper_ap is None:
        assert "its AP is not quoted here" in header
    else:
        assert f"# Paper: {paper_ap} AP" in header


def test_shapes_ablation_base():
    cfg = load_config(SHAPES_BASE)
    quickstart = load_config(QUICKSTART)
    assert (cfg.SOLVER.MAX_ITER, cfg.SEED, cfg.SOLVER.CHECKPOINT_PERIOD) == (800, 0, 400)
    assert cfg.TEST.FOCAL_RETINA.NUM_VIS_IMAGES == 0
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupCosineLR"
    # Everything else is the quick start's.
    different = {
        key for key in sweeps.all_keys(cfg)
        if sweeps.config_value(cfg, key) != sweeps.config_value(quickstart, key)
    }  # fmt: skip
    assert different == {
        "SEED", "SOLVER.MAX_ITER", "SOLVER.CHECKPOINT_PERIOD",
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "OUTPUT_DIR",
        # float32 NCHW, as docs/ablations/* were measured (the quick start: "native" AMP, NHWC)
        "SOLVER.AMP.ENABLED", "MODEL.FOCAL_RETINA.CHANNELS_LAST",
    }  # fmt: skip
    assert (cfg.SOLVER.AMP.ENABLED, cfg.MODEL.FOCAL_RETINA.CHANNELS_LAST) == (False, False)


def test_shapes_grid_files():
    gamma_sweep = sweeps.load_grid_file(os.path.join(SWEEPS_DIR, "shapes/gamma_sweep.yaml"))
    assert gamma_sweep.base == SHAPES_BASE
    assert gamma_sweep.x_key == GAMMA and gamma_sweep.series_keys == []
    rows = [(s.name, dict(s.overrides)) for s in gamma_sweep.settings]
    assert [(name, o[GAMMA], o[ALPHA]) for name, o in rows] == [
        ("gamma0_alpha.75", 0.0, 0.75),
        ("gamma0.5_alpha.50", 0.5, 0.5),
        ("gamma1_alpha.25", 1.0, 0.25),
        ("gamma2_alpha.25", 2.0, 0.25),
        ("gamma5_alpha.25", 5.0, 0.25),
    ]
    ce_vs_fl = sweeps.load_grid_file(os.path.join(SWEEPS_DIR, "shapes/ce_vs_fl.yaml"))
    assert ce_vs_fl.base == SHAPES_BASE and ce_vs_fl.x_key is None
    assert [(s.name, dict(s.overrides)) for s in ce_vs_fl.settings] == [
        (name, {LOSS_NAME: "SigmoidFocalLoss", GAMMA: gamma, ALPHA: alpha})
        for name, gamma, alpha in [("CE", 0.0, -1.0), ("alpha-CE", 0.0, 0.75), ("FL", 2.0, 0.25)]
    ]

    loss_family = sweeps.load_grid_file(os.path.join(SWEEPS_DIR, "shapes/loss_family.yaml"))
    assert loss_family.base == SHAPES_BASE  # resolved from sweeps/shapes/ into configs/


# ----------------------------------------------------------------------------------------------
# Grids, values and checks: the library.


def test_split_and_parse_values():
    assert sweeps.split_top_level("0.5,[[1.0], [0.5, 2.0]], 'a,b' ,x") == [
        "0.5", "[[1.0], [0.5, 2.0]]", "'a,b'", "x",
    ]  # fmt: skip
    assert sweeps.parse_sweep(f"{ALPHA}=.25,0.5,-1") == (ALPHA, [0.25, 0.5, -1])
    assert sweeps.parse_sweep(f"{LOSS_NAME}=SigmoidFocalLoss") == (LOSS_NAME, ["SigmoidFocalLoss"])
    # Values go back to train_net.py as text that Detectron2 reads as the same value.
    for value in (2.0, -1, "SigmoidFocalLoss", "1", [[1.0]], (600,), True):
        assert sweeps.parse_value(sweeps.format_value(value)) == value


def test_cartesian_product_order_and_names():
    settings = sweeps.cartesian_settings(
        [
            (GAMMA, [0, 2, 5]),
            (ALPHA, [0.25, 0.75]),
            ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[[1.0]]]),
        ]
    )
    assert len(settings) == 6
    assert [s.name for s in settings] == [
        f"gamma={g}_alpha={a}_ratios=1.0" for g in (0, 2, 5) for a in (0.25, 0.75)
    ]
    assert settings[3].overrides == [
        (GAMMA, 2), (ALPHA, 0.75), ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[1.0]]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "spec, message",
    [
        (GAMMA, f"--sweep {GAMMA!r} must read KEY=v1,v2,..., e.g. --sweep {GAMMA}=0,0.5,1,2,5."),
        (f"{GAMMA}=1,,2", f"--sweep '{GAMMA}=1,,2' has an empty value; separate values by single commas."),
        (f"{GAMMA}=1,1.0", f"--sweep '{GAMMA}=1,1.0' lists a value twice."),
    ],
)  # fmt: skip
def test_bad_sweep_syntax(spec, message):
    with pytest.raises(ValueError) as error:
        sweeps.parse_sweep(spec)
    assert str(error.value) == message


def plan(tmp_path, sweep=(), grid_file=None, opts=()):
    """The plan of tools/ablate.py --config-file QUICKSTART --dry-run with these options."""
    grid = sweeps.load_grid_file(grid_file) if grid_file else sweeps.sweep_grid(list(sweep))
    output = str(tmp_path / "sweep")
    return sweeps.plan_settings(
        QUICKSTART, sweeps.pair_opts(list(opts)), grid, output, TRAIN_COMMAND
    )


def not_a_key(where, key, hint=""):
    return (
        f"{where}: {key} is not a config key (neither in {QUICKSTART} nor in the defaults of "
        f"Detectron2 and retina-plugin).{hint}"
    )


def test_unknown_keys_are_named_before_anything_runs(tmp_path):
    typo = "MODEL.RETINANET.FOCAL_LOSS_GAMA"
    hint = f" Did you mean {GAMMA}?"
    with pytest.raises(ValueError) as error:
        plan(tmp_path, sweep=[f"{typo}=0,2"])
    assert str(error.value) == not_a_key("--sweep (setting 'focal_loss_gama=0')", typo, hint)

    grid = tmp_path / "grid.yaml"
    grid.write_text(f"settings:\n  fine:\n    {GAMMA}: 1.0\n  typo:\n    {typo}: 1.0\n")
    with pytest.raises(ValueError) as error:
        plan(tmp_path, grid_file=str(grid))
    assert str(error.value) == not_a_key(f"{grid}, setting 'typo'", typo, hint)

    with pytest.raises(ValueError) as error:
        plan(tmp_path, sweep=[f"{GAMMA}=1"], opts=["NO.SUCH_KEY", "1"])
    assert str(error.value) == not_a_key("--opts", "NO.SUCH_KEY")

    with pytest.raises(ValueError) as error:
        plan(tmp_path, sweep=["MODEL.RETINANET=1"])
    assert str(error.value) == (
        "--sweep (setting 'retinanet=1'): MODEL.RETINANET is a group of keys, not a value; "
        "name one of them, e.g. MODEL.RETINANET.NUM_CLASSES."
    )
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "sweep, opts, message",
    [
        (
            [f"{ALPHA}=0.25,1.5"], [],
            "--sweep (setting 'alpha=1.5'): its model does not build: "
            f"{ALPHA} = 1.5 is out of range: alpha must lie in [0, 1], or be negative (e.g. -1) "
            "to disable alpha-balancing.",
        ),
        (
            ["MODEL.RETINANET.NUM_CLASSES=3,many"], [],
            "--sweep (setting 'num_classes=many'): MODEL.RETINANET.NUM_CLASSES = many: Type "
            "mismatch (<class 'int'> vs. <class 'str'>) with values (8 vs. many) for config key: "
            "MODEL.RETINANET.NUM_CLASSES",
        ),
        (
            [f"{GAMMA}=1,2"], [GAMMA, "3.0"],
            f"--sweep (setting 'gamma=1'): {GAMMA} is also set by --opts for every setting; "
            "drop one of them.",
        ),
        (
            [f"{GAMMA}=1"], ["OUTPUT_DIR", "elsewhere"],
            "--opts OUTPUT_DIR: ablate.py sets it per setting; use --output.",
        ),
        ([f"{GAMMA}=1", f"{GAMMA}=2"], [],
         f"--sweep {GAMMA} is given twice; list all its values in one --sweep."),
    ],
)  # fmt: skip
def test_bad_settings(tmp_path, sweep, opts, message):
    with pytest.raises(ValueError) as error:
        plan(tmp_path, sweep=sweep, opts=opts)
    assert str(error.value) == message


def test_grid_file_errors(tmp_path):
    grid = tmp_path / "grid.yaml"
    for text, message in [
        ("settings: []\n", ": a grid file needs a 'settings:' mapping of named settings."),
        ("setings: {a: {}}\n", ": a grid file needs a 'settings:' mapping of named settings."),
        ("settings: {a: {}}\nplot: gamma\n", ": unknown top-level key(s) ['plot']; known: "
         "('base', 'x', 'series', 'settings')."),
        ("settings: {a/b: {}}\n", ", setting 'a/b': a setting name is its folder's name: no "
         "'/', '\\', '|' or spaces, and no leading '.'."),
        ("settings: {a: [1, 2]}\n", ", setting 'a': must be a mapping of config KEY: VALUE overrides."),
        ("settings:\n  a: {}\n  b: {}\n  a: {}\n", ", line 4: 'a' is given twice in the same "
         "mapping; rename or remove one."),
    ]:  # fmt: skip
        grid.write_text(text)
        with pytest.raises(ValueError) as error:
            sweeps.load_grid_file(str(grid))
        assert str(error.value) == f"{grid}{message}"


# ----------------------------------------------------------------------------------------------
# The command line as users run it: a process of its own, started from the repository's root.


def ablate(*argv):
    """tools/ablate.py run with `argv`: its exit status, output and errors."""
    command = [sys.executable, ABLATE, *argv]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)


def ablate_error(*argv) -> str:
    """The message with which tools/ablate.py `argv` exits with status 1, whole."""
    result = ablate(*argv)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()  # the imports' warnings come first
    first = next(i for i, line in enumerate(lines) if line.startswith("ablate.py: "))
    return "\n".join(lines[first:])


def dry_run(tmp_path, *argv):
    # Options first: KEY VALUE pairs (trailing or after --opts) take the rest of the line.
    return ablate("--output", str(tmp_path / "sweep"), "--dry-run", *argv)


def dry_run_error(tmp_path, *argv):
    return ablate_error("--output", str(tmp_path / "sweep"), "--dry-run", *argv)


@pytest.mark.parametrize("grid_file", GRID_FILES)
def test_shapes_grid_dry_run(grid_file, tmp_path):
    output = tmp_path / "sweep"
    grid_path = os.path.join("sweeps", grid_file)  # as docs/ABLATIONS.md writes it
    result = ablate("--grid", grid_path, "--output", str(output), "--dry-run")
    assert result.returncode == 0, result.stderr
    settings = sweeps.load_grid_file(os.path.join(REPO_ROOT, grid_path)).settings
    for setting in settings:
        command = [
            sys.executable, TRAIN_NET, "--config-file", SHAPES_BASE, "--resume",
            "OUTPUT_DIR", str(output / setting.name),
        ]  # fmt: skip
        for key, value in setting.overrides:
            command += [key, str(value)]
        assert f"{setting.name}: to train\n    {shlex.join(command)}\n" in result.stdout
    assert not output.exists()  # a dry run writes nothing


def test_ints_become_floats_and_opts_apply_to_every_setting(tmp_path):
    result = dry_run(
        tmp_path, "--config-file", QUICKSTART, "--sweep", f"{GAMMA}=0,2",
        "--opts", "SOLVER.MAX_ITER", "10", "MODEL.RETINANET.NUM_CONVS", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for gamma in ("0.0", "2.0"):  # Detectron2 refuses the int 2 for a float key
        assert f"SOLVER.MAX_ITER 10 MODEL.RETINANET.NUM_CONVS 1 {GAMMA} {gamma}\n" in result.stdout


def test_a_bad_key_is_named_and_nothing_runs(tmp_path):
    message = dry_run_error(
        tmp_path, "--config-file", QUICKSTART, "--sweep", f"{GAMMA}=1", "NO.SUCH_KEY", "1"
    )
    assert message == "ablate.py: " + not_a_key("--opts", "NO.SUCH_KEY")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sweep", f"{GAMMA}=1", "SOLVER.MAX_ITER"], "The KEY VALUE options ['SOLVER.MAX_ITER'] "
         "have no value for 'SOLVER.MAX_ITER'."),
        (["--sweep", f"{GAMMA}=1", "SOLVER.MAX_ITER", "4", "--keep-going", "x"],
         "--keep-going comes after the KEY VALUE options: give ablate.py's own options first."),
        ([], "Give one of --grid FILE, --configs FOLDER or one or more --sweep KEY=v1,v2,..."),
        (["--sweep", f"{GAMMA}=1", "--launcher", "slurm", "--num-gpus", "2"],
         "--num-gpus with --launcher slurm: give --gpus-per-node and --nodes."),
    ],
)  # fmt: skip
def test_bad_command_lines(tmp_path, argv, message):
    assert dry_run_error(tmp_path, "--config-file", QUICKSTART, *argv) == f"ablate.py: {message}"


# ----------------------------------------------------------------------------------------------
# The tables, with a stand-in for train_net.py whose metrics are known.

FAKE_TRAIN_NET = """
import json, os, sys
argv = sys.argv[1:]
output_dir = argv[argv.index("OUTPUT_DIR") + 1]
gamma = float(argv[argv.index("MODEL.RETINANET.FOCAL_LOSS_GAMMA") + 1])
print("fake train_net.py", " ".join(argv))
if gamma == 1.0:
    sys.exit(3)
with open(os.path.join(output_dir, "log.txt"), "a") as f:
    f.write("[hooks]: Total training time: 0:01:30 (0:00:01 on hooks)\\n")
metrics = {"AP": 10 + gamma, "AP50": 20 + gamma, "AP75": 5 + gamma, "APs": 1.0, "APm": 2.0}
with open(os.path.join(output_dir, "final_results.json"), "w") as f:
    json.dump({"bbox": {**metrics, "APl": float("nan")}}, f)
"""


@pytest.fixture
def fake_train_net(tmp_path):
    """A grid file and the command of a train_net.py stand-in (gamma 1 fails)."""
    script = tmp_path / "fake_train_net.py"
    script.write_text(FAKE_TRAIN_NET)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"x: {GAMMA}\nsettings:\n"
        + "".join(f"  {name}:\n    {GAMMA}: {gamma}\n" for name, gamma in [("g0", 0), ("bad", 1), ("g2", 2)])
    )  # fmt: skip
    return grid, [sys.executable, str(script)]


@pytest.mark.parametrize("keep_going", [False, True])
def test_tables_and_failures(fake_train_net, tmp_path, keep_going, capsys):
    grid_file, train_command = fake_train_net
    output = tmp_path / "sweep"
    grid = sweeps.load_grid_file(str(grid_file))
    failures = sweeps.run_sweep(
        grid, QUICKSTART, [], str(output), train_command, keep_going=keep_going
    )
    assert failures == 1
    bad_log = output / "bad" / "ablate.log"
    assert f"bad: FAILED (exit 3); log: {bad_log}" in capsys.readouterr().out
    last = "| g2 | 2.0 | 12.0 | 22.0 | 7.0 | 1.0 | 2.0 | - | 1.5 min |"
    if not keep_going:
        last = "| g2 | 2.0 | NOT RUN | - | - | - | - | - | - |"
    assert (output / "results.md").read_text().splitlines()[:5] == [
        "| setting | gamma | AP | AP50 | AP75 | APs | APm | APl | train time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| g0 | 0.0 | 10.0 | 20.0 | 5.0 | 1.0 | 2.0 | - | 1.5 min |",
        "| bad | 1.0 | FAILED | - | - | - | - | - | - |",
        last,
    ]
    assert f"- bad: failed; log: `{bad_log}`" in (output / "results.md").read_text()
    assert "fake train_net.py --config-file" in bad_log.read_text()
    with open(output / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["setting"], r[GAMMA], r["AP"], r["train_s"], r["status"]) for r in rows] == [
        ("g0", "0.0", "10.0", "90", "done"),
        ("bad", "1.0", "", "", "failed"),
        ("g2", "2.0", "12.0", "90", "done") if keep_going else ("g2", "2.0", "", "", "not run"),
    ]
    assert (output / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# A tiny real sweep through train_net.py: 2 settings x 4 steps on 24 + 8 shapes images of 64 px.


def tiny_opts(shapes_root, max_iter=4):
    """tests/utils.py's tiny shapes overrides, for every setting."""
    return tiny_shapes_overrides(shapes_root, max_iter) + [
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "MODEL.FOCAL_RETINA.COMPILE", "False",  # saves the compile time of each process
    ]  # fmt: skip


def test_a_failed_setting_is_exit_status_1(tmp_path):
    """train_net.py itself fails (no such training set): the table names the failure."""
    output = tmp_path / "sweep"
    result = ablate(
        "--config-file", QUICKSTART, "--sweep", f"{GAMMA}=2", "--output", str(output),
        *tiny_opts(tmp_path / "shapes"), "DATASETS.TRAIN", "('no_such_dataset',)",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"gamma=2: FAILED (exit 1); log: {output / 'gamma=2' / 'ablate.log'}" in result.stdout
    assert "0 of 1 settings done (1 failed)" in result.stdout
    table = (output / "results.md").read_text().splitlines()
    assert table[2] == "| gamma=2 | 2.0 | FAILED | - | - | - | - | - | - |"


def write_grid(path, alphas=(0.75, 0.25)):
    path.write_text(
        f"base: {SHAPES_BASE}\nx: {GAMMA}\nsettings:\n"
        f"  CE:\n    {GAMMA}: 0.0\n    {ALPHA}: {alphas[0]}\n"
        f"  FL:\n    {GAMMA}: 2.0\n    {ALPHA}: {alphas[1]}\n"
    )


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    grid, output = root / "grid.yaml", root / "sweep"
    write_grid(grid)
    argv = ["--grid", str(grid), "--output", str(output), *tiny_opts(root / "shapes")]
    result = ablate(*argv)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, argv


def test_tiny_sweep_tables(tiny_sweep):
    root, _ = tiny_sweep
    output = root / "sweep"
    lines = (output / "results.md").read_text().splitlines()
    assert (
        lines[0] == "| setting | gamma | alpha | AP | AP50 | AP75 | APs | APm | APl | train time |"
    )
    with open(output / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["setting"], r[GAMMA], r[ALPHA], r["status"]) for r in rows] == [
        ("CE", "0.0", "0.75", "done"),
        ("FL", "2.0", "0.25", "done"),
    ]
    for row, line in zip(rows, lines[2:4]):
        with open(output / row["setting"] / "final_results.json") as f:
            bbox = json.load(f)["bbox"]
        assert float(row["AP"]) == bbox["AP"] and float(row["APm"]) == bbox["APm"]
        assert line.startswith(
            f"| {row['setting']} | {row[GAMMA]} | {row[ALPHA]} | {bbox['AP']:.1f} |"
        )
        assert float(row["train_s"]) >= 0 and float(row["wall_s"]) > 0
        log = (output / row["setting"] / "log.txt").read_text()
        assert "Starting training from iteration 0" in log
        assert (
            f"FOCAL_LOSS_GAMMA {row[GAMMA]}" in (output / row["setting"] / "ablate.log").read_text()
        )
    assert (output / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The record of what each setting trained with.
    with open(output / "FL" / "setting.yaml") as f:
        record = yaml.safe_load(f)
    assert record["base"] == SHAPES_BASE
    assert list(record["overrides"].items())[-2:] == [(GAMMA, "2.0"), (ALPHA, "0.25")]
    assert record["overrides"]["SOLVER.MAX_ITER"] == "4"
    assert record["config"][GAMMA] == 2.0 and record["config"]["SOLVER.MAX_ITER"] == 4


def assert_nothing_trained(printed: str):
    """No "[i/n] NAME: training (log: ...)" or "resuming" line: no setting was started."""
    assert ": training (log: " not in printed and ": resuming (log: " not in printed


def test_second_run_trains_nothing(tiny_sweep):
    root, argv = tiny_sweep
    output = root / "sweep"
    watched = [
        output / name / file
        for name in ("CE", "FL")
        for file in ("final_results.json", "runs.jsonl", "model_final.pth")
    ]
    before = {path: path.stat().st_mtime_ns for path in watched}
    table = (output / "results.md").read_text()
    result = ablate(*argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CE: done, skipped" in result.stdout
    assert_nothing_trained(result.stdout)
    # runs.jsonl gets a line for every training run.
    assert {path: path.stat().st_mtime_ns for path in watched} == before
    assert (output / "results.md").read_text() == table


def test_changed_setting_is_refused(tiny_sweep, tmp_path):
    root, argv = tiny_sweep
    grid = tmp_path / "grid.yaml"
    write_grid(grid, alphas=(0.75, 0.5))  # FL's alpha changed
    argv = ["--grid", str(grid), *argv[2:]]
    assert ablate_error(*argv) == (
        "ablate.py: These settings were trained with another config than they have now:\n"
        f"- FL ({root / 'sweep' / 'FL'}): {ALPHA} = 0.25 there, 0.5 now\n"
        "Delete their folders, choose another --output, or pass --redo-changed to move them "
        "aside and train them again."
    )
    # Changed opts for every setting are changes too.
    message = ablate_error(*argv, "SOLVER.BASE_LR", "0.001")
    assert "- CE (" in message and "- FL (" in message
    assert "SOLVER.BASE_LR = 0.006 there, 0.001 now" in message
    result = ablate("--redo-changed", "--dry-run", *argv)  # listed, not moved
    assert result.returncode == 0, result.stdout + result.stderr
    assert_nothing_trained(result.stdout)
    assert not [name for name in os.listdir(root / "sweep") if ".replaced-" in name]


def test_interrupted_setting_resumes_from_its_checkpoint(tiny_sweep, monkeypatch):
    """FL as if killed after the checkpoint of step 2 (iteration 1): only FL trains, from
    iteration 2, and the table is complete again (the library, with tools/ablate.py's command)."""
    root, _ = tiny_sweep
    folder = root / "sweep" / "FL"
    (folder / "final_results.json").unlink()
    (folder / "model_final.pth").unlink()
    (folder / "model_0000003.pth").unlink(missing_ok=True)
    (folder / "last_checkpoint").write_text("model_0000001.pth")
    trained = []
    real_run_training = runner.run_training

    def record(planned, base):
        trained.append(planned.setting.name)
        return real_run_training(planned, base)

    monkeypatch.setattr(runner, "run_training", record)
    grid = sweeps.load_grid_file(str(root / "grid.yaml"))
    opts = sweeps.pair_opts(tiny_opts(root / "shapes"))
    assert sweeps.run_sweep(grid, grid.base, opts, str(root / "sweep"), TRAIN_COMMAND) == 0
    assert trained == ["FL"]
    last_run = (folder / "log.txt").read_text().split("Starting training from iteration")[-1]
    assert last_run.startswith(" 2")
    final = torch.load(folder / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 3
    with open(root / "sweep" / "results.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["done", "done"]
    with open(folder / "runs.jsonl") as f:
        assert len(f.readlines()) == 2  # the first run and the resumed one


def test_collect_rewrites_the_tables_from_the_recorded_command(tiny_sweep, tmp_path):
    """`ablate.py --collect OUTPUT` (from another folder) writes the same tables, training
    nothing."""
    root, _ = tiny_sweep
    output = root / "sweep"
    table = (output / "results.md").read_text()
    (output / "results.md").unlink()
    command = [sys.executable, ABLATE, "--collect", str(output)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_nothing_trained(result.stdout)
    assert "done: CE, FL\n" in result.stdout
    assert (output / "results.md").read_text() == table


def test_collect_without_a_sweep_is_explained(tmp_path):
    assert ablate_error("--collect", str(tmp_path)) == (
        f"ablate.py: {tmp_path / 'sweep.json'} does not exist: --collect reads the sweep "
        "written there by 'ablate.py ... --output OUTPUT'. Run the sweep command itself instead."
    )


# ----------------------------------------------------------------------------------------------
# --max-parallel and --configs.

SLEEPY_TRAIN_NET = """
import json, os, sys, time
argv = sys.argv[1:]
output_dir = argv[argv.index("OUTPUT_DIR") + 1]
start = time.time()
time.sleep(2)
with open(os.path.join(output_dir, "times.json"), "w") as f:
    json.dump([start, time.time()], f)
with open(os.path.join(output_dir, "final_results.json"), "w") as f:
    json.dump({"bbox": {"AP": 1.0, "AP50": 2.0, "AP75": 3.0, "APs": 1.0, "APm": 1.0, "APl": 1.0}}, f)
"""


@pytest.mark.parametrize("max_parallel", [1, 3])
def test_max_parallel(tmp_path, max_parallel):
    """3 settings of 2 s each: one after another, or all three at once."""
    script = tmp_path / "sleepy_train_net.py"
    script.write_text(SLEEPY_TRAIN_NET)
    output = tmp_path / "sweep"
    grid = sweeps.sweep_grid([f"{GAMMA}=0,1,2"])
    failures = sweeps.run_sweep(
        grid, QUICKSTART, [], str(output), [sys.executable, str(script)],
        max_parallel=max_parallel,
    )  # fmt: skip
    assert failures == 0
    times = sorted(json.loads((output / s.name / "times.json").read_text()) for s in grid.settings)
    overlapping = [b[0] < a[1] for a, b in zip(times, times[1:])]
    assert overlapping == ([False, False] if max_parallel == 1 else [True, True])
    rows = list(csv.DictReader(open(output / "results.csv")))
    assert [r["status"] for r in rows] == ["done"] * 3


def test_max_parallel_must_be_positive(tmp_path):
    message = dry_run_error(tmp_path, "--config-file", QUICKSTART, "--sweep", f"{GAMMA}=1",
                            "--max-parallel", "0")  # fmt: skip
    assert message == "ablate.py: --max-parallel 0: give 1 or more settings at a time."


def test_a_folder_of_configs_is_a_grid(tmp_path):
    """configs/Ablations/Table1b-gamma-FL: a setting per file, trained with that file; the keys
    that differ between the files are the table's columns."""
    folder = os.path.join(ABLATIONS_DIR, "Table1b-gamma-FL")
    grid = sweeps.load_config_folder(folder)
    assert [s.name for s in grid.settings] == [
        "FL_gamma0.0_alpha0.75", "FL_gamma0.1_alpha0.75", "FL_gamma0.2_alpha0.75",
        "FL_gamma0.5_alpha0.50", "FL_gamma1.0_alpha0.25", "FL_gamma2.0_alpha0.25",
        "FL_gamma5.0_alpha0.25",
    ]  # fmt: skip
    assert grid.settings[3].overrides == [(GAMMA, 0.5), (ALPHA, 0.5)]
    assert grid.settings[3].config_file == os.path.join(folder, "FL_gamma0.5_alpha0.50.yaml")
    assert (grid.x_key, grid.series_keys) == (GAMMA, [])
    output = tmp_path / "sweep"
    result = ablate("--configs", os.path.relpath(folder, REPO_ROOT), "--output", str(output),
                    "--dry-run")  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = [
        sys.executable, TRAIN_NET, "--config-file", grid.settings[3].config_file, "--resume",
        "OUTPUT_DIR", str(output / "FL_gamma0.5_alpha0.50"), GAMMA, "0.5", ALPHA, "0.5",
    ]  # fmt: skip
    assert f"FL_gamma0.5_alpha0.50: to train\n    {shlex.join(command)}\n" in result.stdout
    assert dry_run_error(tmp_path, "--configs", str(tmp_path)) == (
        f"ablate.py: {tmp_path} holds no *.yaml config: --configs takes a folder of configs."
    )
