"""Deployment: a trained FocalRetinaNet as ONNX, torch.export or TorchScript, its whole inference
(post-processing included) in the graph, each file checked against PyTorch; and a detector that
runs such a file without building the PyTorch model.

Importing it registers the ONNX translation of FocalRetinaNet's NMS operator
(:func:`retina_plugin.modeling.detections.register_onnx_translation`), so that
``torch.onnx.export`` of any FocalRetinaNet (e.g. inside Detectron2's TracingAdapter) finds it:
torch builds its table of translations before it captures the model."""

from ..modeling.detections import register_onnx_translation
from .deployable import DeployableRetinaNet, Preprocessing, resize_image
from .exporter import build_deployable, compare_on_dataset, example_inputs, export_model
from .formats import (
    EXACT_FORMATS,
    EXPORT_FORMATS,
    FILE_NAMES,
    ExportError,
    export_to,
    load_exported_function,
)
from .quantize import quantize_onnx
from .runtime import SIDECAR_NAME, ExportedDetector
from .verify import BOX_TOLERANCE, SCORE_TOLERANCE, Comparison, compare_detections

register_onnx_translation()

__all__ = [
    "DeployableRetinaNet",
    "Preprocessing",
    "resize_image",
    "build_deployable",
    "compare_on_dataset",
    "example_inputs",
    "export_model",
    "EXACT_FORMATS",
    "EXPORT_FORMATS",
    "quantize_onnx",
    "FILE_NAMES",
    "ExportError",
    "export_to",
    "load_exported_function",
    "SIDECAR_NAME",
    "ExportedDetector",
    "BOX_TOLERANCE",
    "SCORE_TOLERANCE",
    "Comparison",
    "compare_detections",
]
