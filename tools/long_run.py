#!/usr/bin/env python
"""
A long training on the embedded shapes dataset that records memory and speed as it goes, to show
whether either drifts (a leak in the model, the data-loader workers or the loop).

    python tools/long_run.py --max-iter 2500 --num-workers 4 --interval 100 --warmup-iters 300

Every ``--interval`` iterations it records the iterations/s since the last record and the memory
of the main process and of its data-loader workers: RSS, and PSS, which counts the pages that
forked workers share with the main process once rather than in each. At the end it prints the
table, writes it as CSV (``OUTPUT_DIR/long_run.csv``) and reports the growth after warm-up as
MiB per 1000 iterations (least-squares slope) and the speed of the first and last thirds.
Linux only (reads /proc). Extra ``KEY VALUE`` pairs override the config. The logic lives in
retina_plugin.benchmark.long_run; this is its command line.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse

from retina_plugin.benchmark import run_long_training, shapes_overrides


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="configs/quickstart.yaml", metavar="FILE")
    parser.add_argument("--max-iter", type=int, default=2500)
    parser.add_argument("--num-workers", type=int, default=4, help="data-loader workers")
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--image-size", type=int, default=64, help="shapes images, pixels")
    parser.add_argument("--interval", type=int, default=100, help="iterations between records")
    parser.add_argument("--warmup-iters", type=int, default=300, help="left out of the growth")
    parser.add_argument("--output", default="output/long_run", help="OUTPUT_DIR")
    parser.add_argument("--csv", default="", help="default: OUTPUT_DIR/long_run.csv")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    overrides = shapes_overrides(
        image_size=args.image_size,
        batch=args.batch,
        max_iter=args.max_iter,
        num_workers=args.num_workers,
        output_dir=args.output,
    )
    return run_long_training(
        args.config_file,
        [*overrides, *args.opts],
        interval=args.interval,
        warmup_iters=args.warmup_iters,
        csv_path=args.csv,
    )


if __name__ == "__main__":
    main()
