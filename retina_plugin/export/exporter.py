"""
Export a trained model (what tools/export_model.py runs): build it from its config, load its
weights strictly, write each format, write model.json, and check every file's detections against
PyTorch's on the test images (and, asked, their COCO AP).
"""

import logging
import os
import platform

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ..data import read_image_file
from ..engine import SafeCheckpointer
from ..evaluation import build_coco_evaluator
from .deployable import DeployableRetinaNet, Preprocessing, resize_image
from .formats import EXPORT_FORMATS, FILE_NAMES, export_to, load_exported_function
from .quantize import quantize_onnx
from .runtime import write_sidecar
from .verify import Comparison, compare_detections

__all__ = ["build_deployable", "example_inputs", "export_model", "compare_on_dataset"]

logger = logging.getLogger(__name__)


class _StrictCheckpointer(SafeCheckpointer):
    """SafeCheckpointer that remembers which parameters the checkpoint did not fit."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _check_fits(weights: str, config_file: str, incompatible):
    if incompatible is None:
        return
    shapes = [f"{k}: {tuple(a)} in the file, {tuple(b)} in the model" for k, a, b in
              incompatible.incorrect_shapes]  # fmt: skip
    missing = [
        k
        for k in incompatible.missing_keys
        if k not in {s[0] for s in incompatible.incorrect_shapes}
    ]
    if shapes or missing:
        details = "; ".join(shapes[:3] + [f"missing: {', '.join(missing[:3])}"] * bool(missing))
        raise ValueError(
            f"MODEL.WEIGHTS {weights} does not fit the model of {config_file}: "
            f"{len(shapes)} parameter(s) have other shapes and {len(missing)} are missing "
            f"({details}). Export with the config (and KEY VALUE overrides) the weights were "
            "trained with."
        )


def build_deployable(cfg, config_file: str = "the config") -> DeployableRetinaNet:
    """The float32 NCHW CPU model of `cfg` with MODEL.WEIGHTS loaded (weights only; every parameter
    must fit, else ValueError), wrapped for export."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.AMP.ENABLED = False  # the exported graph is float32
    cfg.MODEL.FOCAL_RETINA.CHANNELS_LAST = False  # and NCHW: each runtime picks its own layout
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        checkpointer = _StrictCheckpointer(model)
        checkpointer.load(cfg.MODEL.WEIGHTS)
        _check_fits(cfg.MODEL.WEIGHTS, config_file, checkpointer.incompatible)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting the model's random initialisation.")
    return DeployableRetinaNet(model)


def example_inputs(module: DeployableRetinaNet) -> tuple:
    """An example image whose every feature map is at least 2 x 2 (torch.export keeps what it
    sees; see formats.py) and of unequal sides, and its output size."""
    stride = max(module.model.anchor_generator.strides)
    height, width = 2 * stride, 2 * stride + module.size_divisibility
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    return image, torch.tensor([height, width])


def _test_images(cfg, max_images: int):
    if not cfg.DATASETS.TEST:
        return []
    return DatasetCatalog.get(cfg.DATASETS.TEST[0])[:max_images]


def compare_on_dataset(cfg, module, run, dataset_dicts, comparison, evaluate_dir=None):
    """
    Run PyTorch (`module`'s FocalRetinaNet, as train_net.py evaluates it) and the exported function
    `run` on the pictures of `dataset_dicts`, adding to `comparison`; returns, with
    `evaluate_dir`, the COCO AP of both ({"pytorch": AP, "exported": AP}) from Detectron2's
    COCOEvaluator on DATASETS.TEST[0], else None.
    """
    preprocessing = Preprocessing.from_config(cfg)
    evaluators = {}
    if evaluate_dir:
        name = cfg.DATASETS.TEST[0]
        evaluators = {k: build_coco_evaluator(cfg, name, os.path.join(evaluate_dir, k)) for k in
                      ("pytorch", "exported")}  # fmt: skip
        for evaluator in evaluators.values():
            evaluator.reset()
    for record in dataset_dicts:
        bgr, _ = read_image_file(record["file_name"], "BGR", preprocessing.alpha_background)
        image, size = resize_image(bgr, preprocessing)
        inputs = {"image": torch.from_numpy(image), "height": size[0], "width": size[1]}
        with torch.no_grad():
            instances = module.model([inputs])[0]["instances"]
        expected = (instances.pred_boxes.tensor.numpy(), instances.scores.numpy(),
                    instances.pred_classes.numpy())  # fmt: skip
        actual = run(image, np.asarray(size, dtype=np.int64))
        compare_detections(comparison, record["file_name"], expected, actual)
        if evaluators:
            exported = Instances(size, pred_boxes=Boxes(torch.from_numpy(actual[0])),
                                 scores=torch.from_numpy(actual[1]),
                                 pred_classes=torch.from_numpy(actual[2]))  # fmt: skip
            evaluators["pytorch"].process([record], [{"instances": instances}])
            evaluators["exported"].process([record], [{"instances": exported}])
    ap = {k: e.evaluate()["bbox"]["AP"] for k, e in evaluators.items()} if evaluators else None
    return ap


def calibration_inputs(cfg, count: int) -> list:
    """The exported model's inputs for the first `count` pictures of DATASETS.TRAIN[0], resized
    as for testing: what int8 quantisation calibrates its activation ranges on."""
    if not cfg.DATASETS.TRAIN:
        return []
    preprocessing = Preprocessing.from_config(cfg)
    inputs = []
    for record in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:count]:
        bgr, _ = read_image_file(record["file_name"], "BGR", preprocessing.alpha_background)
        inputs.append(resize_image(bgr, preprocessing))
    return inputs


def export_model(cfg, formats, output_dir: str, config_file: str, verify_images: int = 20,
                 evaluate: bool = False, calibration_images: int = 64) -> dict:  # fmt: skip
    """
    Export the model of `cfg` in each of `formats` into `output_dir` and check each file against
    PyTorch on the first `verify_images` pictures of DATASETS.TEST[0] (all of them and the COCO
    AP with `evaluate`); onnx-int8 is calibrated on `calibration_images` training pictures.
    Returns {format: {"file", "comparison", "ap"}}.
    """
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"--format {unknown[0]!r} is not one of {EXPORT_FORMATS}.")
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as error:
        raise OSError(
            f"--output {output_dir} is not a writable folder: {error.strerror}."
        ) from None
    module = build_deployable(cfg, config_file)
    inputs = example_inputs(module)
    dicts = _test_images(cfg, None if evaluate else verify_images)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    class_names = list(metadata.get("thing_classes", []))
    to_dataset = {v: k for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}
    num_classes = module.model.num_classes
    report = {}
    if "onnx-int8" in formats and "onnx" not in formats:
        formats = ["onnx", *formats]  # the int8 model is quantised from the float32 one
    for export_format in sorted(formats, key=EXPORT_FORMATS.index):
        if export_format == "onnx-int8":
            path = quantize_onnx(
                os.path.join(output_dir, FILE_NAMES["onnx"]),
                os.path.join(output_dir, FILE_NAMES["onnx-int8"]),
                calibration_inputs(cfg, calibration_images),
            )
        else:
            path = export_to(export_format, module, inputs, output_dir)
        run = load_exported_function(path)
        comparison = Comparison()
        # The example image first: it is not a dataset picture, and has many candidates.
        with torch.no_grad():
            expected = tuple(x.numpy() for x in module(*inputs))
        compare_detections(comparison, "example image", expected,
                           run(inputs[0].numpy(), inputs[1].numpy()))  # fmt: skip
        evaluate_dir = os.path.join(output_dir, "eval", export_format) if evaluate else None
        ap = compare_on_dataset(cfg, module, run, dicts, comparison, evaluate_dir)
        report[export_format] = {"file": path, "comparison": comparison, "ap": ap}
        write_sidecar(output_dir, {
            "preprocessing": Preprocessing.from_config(cfg).to_dict(),
            "num_classes": num_classes,
            "class_names": class_names or [str(i) for i in range(num_classes)],
            "category_ids": [to_dataset.get(i, i) for i in range(num_classes)],
            "inputs": {"image": "(3, h, w) float32, resized (resize_image), INPUT.FORMAT",
                       "output_size": "(2,) int64: the picture's (height, width)"},
            "outputs": {"boxes": "(D, 4) float32 XYXY in output_size's pixels",
                        "scores": "(D,) float32", "classes": "(D,) int64, 0 .. K - 1"},
            "config": config_file, "weights": cfg.MODEL.WEIGHTS,
            "torch": torch.__version__, "python": platform.python_version(),
            "files": {export_format: {"file": os.path.basename(path),
                                      "verified": comparison.summary(), "ap": ap}},
        })  # fmt: skip
    return report
