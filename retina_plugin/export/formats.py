"""
The three file formats of an exported :class:`DeployableRetinaNet`, how each is written and read
back as a function ``(image (3, h, w) float32, output_size (2,) int64) -> (boxes, scores, classes)``.

* ``onnx`` (model.onnx): torch 2.14's default exporter (``torch.onnx.export(dynamo=True)``,
  which captures the model with ``torch.export``), opset 18, dynamic height and width, checked by
  ``onnx.checker``; run by ONNX Runtime. One translation is added to the exporter's (through
  onnxscript's registry, when the model is captured): ``retina_plugin::nms`` (torchvision's NMS
  with a correct data-dependent output size, see
  :func:`retina_plugin.modeling.detections.exportable_nms`) gets onnxscript's translation of
  ``torchvision::nms``, one ONNX ``NonMaxSuppression``.
* ``torch-export`` (model.pt2): the ``torch.export`` ExportedProgram, saved with
  ``torch.export.save``. Read back with ``check_guards=False``: the guards ``torch.export``
  records from the convolutions' choice of kernel (every feature map wider than one pixel, true
  of the example image) do not change the graph, and would refuse the small images (P7 of a
  128-pixel image is one pixel wide) on which it computes what PyTorch computes (tested).
* ``torchscript`` (model.ts): traced (``torch.jit.trace``) through Detectron2's
  :class:`TracingAdapter`; TorchScript is deprecated in torch 2.14 but still runs where
  libtorch alone is available.

Reading a .ts file needs torch and torchvision (its NMS operator); a .pt2 file also needs
``import retina_plugin`` (its NMS operator, ``retina_plugin::nms``); an .onnx file needs only
onnxruntime.
"""

import os
import sys
import traceback

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["EXPORT_FORMATS", "FILE_NAMES", "export_to", "load_exported_function", "ExportError"]

EXPORT_FORMATS = ("onnx", "onnx-int8", "torch-export", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "torch-export": "model.pt2",
              "torchscript": "model.ts"}  # fmt: skip
# Formats whose detections must equal PyTorch's; onnx-int8's are approximations (quantize.py).
EXACT_FORMATS = ("onnx", "torch-export", "torchscript")
INPUT_NAMES = ["image", "output_size"]
OUTPUT_NAMES = ["boxes", "scores", "classes"]
ONNX_OPSET = 18


class ExportError(RuntimeError):
    """An exporter failed; the message says which format, the exporter's own error and what to try."""


def _dynamic_shapes():
    # Height and width of the image are dynamic; the output size is always (2,).
    return {
        "image": {1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC},
        "output_size": None,
    }


def _export_program(module: nn.Module, inputs: tuple) -> torch.export.ExportedProgram:
    with _size_oblivious():
        return torch.export.export(module, inputs, dynamic_shapes=_dynamic_shapes(), strict=False)


def _size_oblivious():
    """torch.export's setting (torch's own config, patched for the duration of the export) under
    which a size is not assumed to differ from 0 or 1 because the example's does."""
    import torch.fx.experimental._config as shape_config

    return shape_config.patch(backed_size_oblivious=True)


def _export_onnx(module: nn.Module, inputs: tuple, path: str):
    import onnx

    with _size_oblivious():
        program = torch.onnx.export(
            module,
            inputs,
            dynamo=True,
            opset_version=ONNX_OPSET,
            dynamic_shapes=_dynamic_shapes(),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            verbose=False,
        )
    program.save(path)
    onnx.checker.check_model(path, full_check=True)


def _export_torchscript(module: nn.Module, inputs: tuple, path: str):
    from detectron2.export.flatten import TracingAdapter

    adapter = TracingAdapter(module, inputs)
    traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    traced.save(path)


_WRITERS = {
    "onnx": _export_onnx,
    "torch-export": lambda module, inputs, path: torch.export.save(
        _export_program(module, inputs), path
    ),
    "torchscript": _export_torchscript,
}

_ADVICE = {
    "onnx": "the torch-export format shows whether torch.export itself captures the model; "
    "an op named above as having no ONNX function needs a translation (see "
    "retina_plugin/export/formats.py).",
    "torch-export": "run the torchscript format, which traces instead of capturing; the "
    "parts of the model named above must avoid Python branches on tensor values.",
    "torchscript": "the torch-export and onnx formats do not trace.",
}


def export_to(export_format: str, module: nn.Module, inputs: tuple, output_dir: str) -> str:
    """Write `module` (called as ``module(*inputs)`` on the example `inputs`) in `export_format`
    into `output_dir`; returns the file's path. Raises :class:`ExportError` naming the format,
    the exporter's error and what to try."""
    if export_format not in _WRITERS:
        raise ValueError(
            f"export_to writes {tuple(_WRITERS)}, not {export_format!r} (onnx-int8 is quantised "
            "from an onnx file: retina_plugin.export.quantize_onnx)."
        )
    path = os.path.join(output_dir, FILE_NAMES[export_format])
    try:
        with torch.no_grad():
            _WRITERS[export_format](module, inputs, path)
    except Exception as error:
        cause = _root_cause(error)
        lines = str(cause).strip().splitlines()
        raise ExportError(
            f"Exporting the model as {export_format} failed: {type(cause).__name__}: "
            f"{lines[0] if lines else ''}\nThe model's code where it failed: "
            f"{_model_frame(error)}.\nTry: {_ADVICE[export_format]}"
        ) from error
    return path


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _root_cause(error: BaseException) -> BaseException:
    return list(_chain(error))[-1]


# Frames of these packages are the exporters' and Python's own, not the model's.
_EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript", "onnx_ir", "os")


def _exporter_dirs() -> tuple:
    dirs = [os.path.abspath(__file__)]
    for name in _EXPORTER_PACKAGES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
    return tuple(dirs)


def _model_frame(error: BaseException) -> str:
    """The innermost frame of the error's tracebacks that is neither the exporters' nor Python's:
    the model's (or Detectron2's) line that could not be exported."""
    found = "not found (see the exporter's error above)"
    exporter_dirs = _exporter_dirs()
    for link in _chain(error):
        for frame in traceback.extract_tb(link.__traceback__):
            if not os.path.abspath(frame.filename).startswith(exporter_dirs):
                found = f"{frame.filename}:{frame.lineno} in {frame.name}: {frame.line}"
    return found


def load_exported_function(path: str):
    """The model in file `path` (.onnx, .pt2 or .ts) as a function of numpy arrays
    ``(image (3, h, w) float32, output_size (2,) int64) -> (boxes, scores, classes)`` numpy."""
    extension = os.path.splitext(path)[1]
    if extension == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run_onnx(image: np.ndarray, output_size: np.ndarray):
            return tuple(session.run(OUTPUT_NAMES, {"image": image, "output_size": output_size}))

        run_onnx.session = session
        return run_onnx
    if extension == ".pt2":
        module = torch.export.load(path).module(check_guards=False)
    elif extension == ".ts":
        module = torch.jit.load(path)
    else:
        raise ValueError(
            f"{path}: unknown model file type {extension!r}; give a .onnx, .pt2 or .ts file "
            "written by tools/export_model.py."
        )

    def run_torch(image: np.ndarray, output_size: np.ndarray):
        with torch.no_grad():
            outputs = module(torch.from_numpy(image), torch.from_numpy(output_size))
        return tuple(x.numpy() for x in outputs)

    return run_torch


def as_numpy(outputs: tuple[Tensor, ...]) -> tuple[np.ndarray, ...]:
    return tuple(x.detach().cpu().numpy() for x in outputs)
