#!/usr/bin/env python
"""
Figure 1 of the paper: the focal loss FL(p_t) = -(1 - p_t)^gamma log(p_t) against the probability
p_t of the ground-truth class, for several gamma, computed with retina_plugin.sigmoid_focal_loss.

    python tools/plot_focal_loss.py --output output/focal_loss.png

writes the PNG and, beside it, a CSV of the plotted values.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse

from retina_plugin.analysis import FIGURE_1_GAMMAS, focal_loss_figure
from retina_plugin.analysis.focal_loss_curve import DEFAULT_OUTPUT


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help=f"PNG to write, CSV beside it ({DEFAULT_OUTPUT})"
    )
    parser.add_argument("--gammas", type=float, nargs="+", default=list(FIGURE_1_GAMMAS))
    parser.add_argument("--points", type=int, default=400, help="points per curve")
    paths = focal_loss_figure(**vars(parser.parse_args(argv)))
    print(f"wrote {', '.join(paths)}")


if __name__ == "__main__":
    main()
