#!/usr/bin/env python
"""
Anchor coverage report: how well a config's anchors cover its training boxes, and what to change.

    python tools/anchor_stats.py --config-file configs/quickstart.yaml --max-images 300

For every ground-truth box of DATASETS.TRAIN, resized as the train loader resizes it, the best IoU
any anchor of the model reaches with it, and what the model's anchor Matcher gives it. Prints the
share of boxes learned only through low-quality matches, overall and by size and aspect ratio,
the positive anchors per pyramid level, and KEY VALUE overrides it has measured to cover more
boxes; writes anchor_stats.png, anchor_stats.csv (one row per box) and anchor_stats.json into
--output-dir. See retina_plugin/analysis/anchor_coverage.py.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse

from retina_plugin.analysis import anchor_coverage_report
from retina_plugin.analysis.anchor_report import DEFAULT_MAX_IMAGES, DEFAULT_OUTPUT_DIR


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help=f"folder for PNG, CSV, JSON (default {DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=DEFAULT_MAX_IMAGES,
        help=f"the first N training images (default {DEFAULT_MAX_IMAGES}; 0: all)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="shortest edge to resize to (default: the largest INPUT.MIN_SIZE_TRAIN)",
    )
    parser.add_argument(
        "--poor-share",
        type=float,
        default=0.1,
        help="coverage of a group of boxes is poor when more than this share of them stays "
        "under the foreground threshold (default 0.1)",
    )
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def main(argv=None):
    report = anchor_coverage_report(**vars(get_parser().parse_args(argv)))
    print(report.text)
    print(f"wrote {', '.join(report.paths)}")
    return report.data


if __name__ == "__main__":
    main()
