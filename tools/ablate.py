#!/usr/bin/env python
"""
Ablation sweeps as in the paper's Table 1: train every setting of a grid with train_net.py,
evaluate each with COCOEvaluator, and write a table of AP, AP50, AP75, APs, APm and APl.

    # named settings from a grid file (the shapes grids name their base config themselves)
    python tools/ablate.py --grid sweeps/shapes/gamma_sweep.yaml \\
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

On a SLURM cluster, ``--launcher slurm`` (with tools/submit.py's cluster options) submits every
setting that is not done as a job of its own, at once, and returns; each job requeues itself
before its time limit and resumes there. Run the same command again (or ``--collect OUTPUT``)
to write the tables from whatever has finished, with the settings still queued, running, failed
(with their logs) or preempted; settings done, queued or running are not submitted again:

    python tools/ablate.py --launcher slurm --partition learn --nodes 1 --gpus-per-node 8 \
        --time 24:00:00 --grid configs/Ablations/Table1b-gamma-FL.yaml --output output/table1b
    python tools/ablate.py --collect output/table1b

The logic lives in retina_plugin.sweeps (and retina_plugin.slurm); this is its command line,
which trains with the repository's train_net.py.
"""

from __future__ import annotations

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse
import os
import sys

from retina_plugin import slurm, sweeps
from retina_plugin.sweeps import cluster

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")  # what every setting trains with


def get_parser() -> argparse.ArgumentParser:
    """The options of ablate.py; KEY VALUE pairs after them apply to every setting."""
    parser = argparse.ArgumentParser(
        description="Train, evaluate and tabulate the settings of an ablation grid.",
        epilog="KEY VALUE pairs after the options (or after --opts) apply to every setting.",
    )
    parser.add_argument("--config-file", help="base config (default: the grid file's 'base')")
    parser.add_argument(
        "--grid", help="grid file of named settings (see retina_plugin.sweeps.load_grid_file)"
    )
    parser.add_argument("--configs", help="folder of configs, one setting each (Table 1b's)")
    parser.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=v1,v2,...",
        help="a swept key; several --sweep give their cartesian product",
    )  # fmt: skip
    parser.add_argument("--output", help="folder of the settings and tables")
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
    parser.add_argument(
        "--launcher", choices=("local", "slurm"), default="local",
        help="train here, or submit every setting as a SLURM job at once",
    )  # fmt: skip
    parser.add_argument(
        "--max-parallel", type=int, default=1, metavar="N", help="local: settings at a time"
    )
    parser.add_argument(
        "--collect", metavar="OUTPUT",
        help="only write OUTPUT's tables from what has finished, and list the rest",
    )  # fmt: skip
    slurm.add_cluster_arguments(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    parser.add_argument("trailing_opts", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    """Run, submit or collect the sweep; returns the exit status (1 when a setting failed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_parser().parse_args(argv)
    if args.collect:  # the recorded command, run from where it ran
        argv = cluster.load_command(args.collect)
        args = get_parser().parse_args(argv)
        args.collect = True
    if not args.output:
        raise ValueError("Give --output FOLDER (or --collect FOLDER of a sweep run before).")
    grid, base = sweeps.load_sweep(
        args.grid, args.sweep, args.configs, args.config_file, args.x, args.series
    )
    opts = sweeps.pair_opts(list(args.opts) + list(args.trailing_opts))
    on_slurm = args.launcher == "slurm"
    if on_slurm and args.num_gpus != 1:
        raise ValueError("--num-gpus with --launcher slurm: give --gpus-per-node and --nodes.")
    record = None if args.collect or args.dry_run else argv  # for --collect, once checked
    if on_slurm or args.collect:
        by_status = cluster.submit_and_collect(
            grid, base, opts, args.output, TRAIN_NET, args, slurm=on_slurm,
            submit=not args.collect, dry_run=args.dry_run, redo_changed=args.redo_changed,
            record=record,
        )  # fmt: skip
        return 1 if "failed" in by_status else 0
    failures = sweeps.run_sweep(
        grid, base, opts, args.output, [sys.executable, TRAIN_NET],
        num_gpus=args.num_gpus, keep_going=args.keep_going, redo_changed=args.redo_changed,
        dry_run=args.dry_run, max_parallel=args.max_parallel, record=record,
    )  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"ablate.py: {error}")
