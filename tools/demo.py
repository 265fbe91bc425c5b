#!/usr/bin/env python
"""
Run a trained model on image files or folders; write the images with boxes and a COCO-style
JSON of the detections.

    python tools/demo.py --config-file configs/quickstart.yaml --input photo.jpg more_images/ \\
        --output output/demo --opts MODEL.WEIGHTS output/quickstart/model_final.pth
    python tools/demo.py --model output/export/model.onnx --input photo.jpg --output output/demo

Images that cannot be read are reported by name and skipped; the exit status is then 1.
See retina_plugin/demo.py.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse
import sys

from detectron2.utils.logger import setup_logger

from retina_plugin.demo import DEFAULT_SCORE_THRESH, run_demo


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE", help="model config (a PyTorch model)")
    model.add_argument(
        "--model", metavar="FILE",
        help="an exported model (.onnx, .pt2, .ts) from tools/export_model.py, run without PyTorch's "
        "model (ONNX Runtime for .onnx)",
    )  # fmt: skip
    parser.add_argument(
        "--input",
        dest="inputs",
        metavar="INPUT",
        nargs="+",
        required=True,
        help="image files and/or folders",
    )
    parser.add_argument("--output", required=True, help="folder for images and detections.json")
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=DEFAULT_SCORE_THRESH,
        help="draw boxes scoring at least this (when none does, the best 3 are drawn in grey)",
    )
    parser.add_argument(
        "--ground-truth",
        metavar="DATASET_OR_JSON",
        help="a COCO json file or a dataset registered by the config: the images it annotates are "
        "drawn with their ground truth on the left",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def main(argv=None) -> int:
    return run_demo(**vars(get_parser().parse_args(argv)))


if __name__ == "__main__":
    setup_logger(name="retina_plugin")
    sys.exit(main())
