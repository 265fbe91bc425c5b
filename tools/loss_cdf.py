#!/usr/bin/env python
"""
Figure 4 of the paper: the cumulative distribution of the normalised focal loss over positive and
over negative samples, for several gamma, from the predictions of one trained model.

    python tools/loss_cdf.py --config-file configs/quickstart.yaml \\
        MODEL.WEIGHTS output/quickstart/model_final.pth

The model runs over the images of --dataset (default DATASETS.TEST[0]), resized as at test time;
its anchors are labelled by its own Matcher. A sample is an (anchor, class) pair for sigmoid
losses, an anchor for the softmax focal loss (see retina_plugin/analysis/loss_cdf.py). Writes the
PNG and, beside it, a CSV of the curves; prints the share of the loss the hardest samples carry.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse

from retina_plugin.analysis import PAPER_GAMMAS, loss_cdf_report
from retina_plugin.analysis.loss_cdf import DEFAULT_OUTPUT


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--dataset", default=None, help="dataset name (default DATASETS.TEST[0])")
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help=f"PNG to write, CSV beside it ({DEFAULT_OUTPUT})"
    )
    parser.add_argument("--gammas", type=float, nargs="+", default=list(PAPER_GAMMAS))
    parser.add_argument("--max-images", type=int, default=200, help="at most this many images")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--points", type=int, default=1000, help="CSV rows per curve, minus 1")
    parser.add_argument(
        "--max-negatives",
        type=int,
        default=20_000_000,
        help="keep a uniform random subset of about this many negatives (4 bytes each); the "
        "curves of a uniform subset are those of all negatives, up to sampling noise",
    )
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def main(argv=None):
    report = loss_cdf_report(**vars(get_parser().parse_args(argv)))
    print(report.text)
    print(f"wrote {', '.join(report.paths)}")
    return report.data


if __name__ == "__main__":
    main()
