"""int8 ONNX: the exported float32 model with its convolutions quantised by ONNX Runtime (static,
QDQ: int8 weights per output channel, uint8 activations whose ranges are calibrated on pictures).
Everything after the head (scores, top-k, decoding, NMS) stays float32. Its detections are not
PyTorch's: tools/export_model.py reports the AP of both (``--eval``)."""

import os
import tempfile

import numpy as np

__all__ = ["quantize_onnx"]


class _Feeds:
    """onnxruntime.quantization's CalibrationDataReader over a list of input dicts."""

    def __init__(self, feeds):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def quantize_onnx(onnx_path: str, output_path: str, calibration_inputs) -> str:
    """
    Write the int8 version of `onnx_path` to `output_path`; `calibration_inputs` are the exported
    model's inputs, pairs of (image (3, h, w) float32, output_size (2,) int64), e.g. resized
    training pictures (some tens are enough). Returns `output_path`.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = [{"image": image, "output_size": np.asarray(size, dtype=np.int64)}
             for image, size in calibration_inputs]  # fmt: skip
    if not feeds:
        raise ValueError(
            "int8 quantisation needs calibration pictures: DATASETS.TRAIN names none that load."
        )
    reader = type("CalibrationFeeds", (_Feeds, CalibrationDataReader), {})(feeds)
    with tempfile.TemporaryDirectory() as folder:
        # ONNX Runtime's recommended preparation (graph optimisation, shapes) before quantising.
        prepared = os.path.join(folder, "prepared.onnx")
        quant_pre_process(onnx_path, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, output_path, reader,
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv"],
        )  # fmt: skip
    return output_path
