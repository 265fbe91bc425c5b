#!/usr/bin/env python
"""
Export a trained model with its whole inference (normalisation to per-class NMS and the boxes in
the picture's pixels) as ONNX, torch.export or TorchScript, and check each file's detections
against PyTorch's on the test images.

    python tools/export_model.py --config-file configs/quickstart.yaml --format onnx \\
        --output output/export --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Writes OUTPUT/model.onnx (.pt2, .ts) and OUTPUT/model.json (pre-processing and class names);
run the file with tools/demo.py --model OUTPUT/model.onnx. Exit status 1 when a file's
detections differ from PyTorch's (onnx-int8, quantised, is approximate: compare the APs
with --eval). See retina_plugin/export/.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse
import logging
import sys

from detectron2.utils.logger import setup_logger

from retina_plugin.analysis.config import load_analysis_config
from retina_plugin.export import EXACT_FORMATS, EXPORT_FORMATS, ExportError, export_model

logger = logging.getLogger("retina_plugin.export")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument(
        "--format", dest="formats", nargs="+", choices=EXPORT_FORMATS, default=["onnx"],
        help="one or more formats (default: onnx)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="folder for the model files")
    parser.add_argument(
        "--verify-images", type=int, default=20, metavar="N",
        help="compare with PyTorch on the first N test images (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--eval", action="store_true",
        help="compare on every test image and report both COCO APs",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-images", type=int, default=64, metavar="N",
        help="onnx-int8: calibrate on the first N training images (default 64)",
    )  # fmt: skip
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        cfg = load_analysis_config(args.config_file, args.opts)
        report = export_model(
            cfg, args.formats, args.output, args.config_file, args.verify_images, args.eval,
            args.calibration_images,
        )  # fmt: skip
    except (ValueError, OSError, ExportError) as error:
        sys.exit(f"export_model.py: {error}")
    status = 0
    for export_format, result in report.items():
        comparison = result["comparison"]
        if export_format in EXACT_FORMATS:
            logger.info(f"{export_format}: {result['file']}: {comparison.summary()}")
        else:
            logger.info(f"{export_format}: {result['file']}: quantised, approximate: detections "
                        f"differ from PyTorch's on {len(comparison.mismatches)} of "
                        f"{comparison.images} images; compare the COCO APs (--eval)")  # fmt: skip
        if result["ap"]:
            logger.info(f"{export_format}: COCO AP PyTorch {result['ap']['pytorch']:.3f}, "
                        f"exported {result['ap']['exported']:.3f}")  # fmt: skip
        if export_format not in EXACT_FORMATS:  # int8: approximate by design
            continue
        for mismatch in comparison.mismatches[:5]:
            logger.error(mismatch)
        status |= not comparison.equal
    return status


if __name__ == "__main__":
    setup_logger(name="retina_plugin")
    sys.exit(main())
