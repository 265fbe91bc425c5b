"""
The exported function: a trained :class:`FocalRetinaNet`'s whole inference on one image as a
module of tensors in, tensors out, and the pre-processing that goes before it.

    image (3, h, w) float32  ->  normalise, pad to the backbone's size divisibility, backbone,
    output_size (2,) int64       FPN, head, the loss's class scores, per-level top-k above the
                                 score threshold, box decoding, per-class NMS, the best
                                 DETECTIONS_PER_IMAGE, boxes scaled to output_size and clipped,
                                 empty boxes dropped
                             ->  boxes (D, 4) float32 XYXY, scores (D,) float32, classes (D,) int64

`image` is the picture already resized by :func:`resize_image` (Detectron2's test-time
ResizeShortestEdge, as ``DefaultPredictor`` applies it) and in the model's INPUT.FORMAT;
`output_size` is the (height, width) of the original picture, which the boxes are mapped back to.
The resize stays outside the graph so that its pixels are exactly the ones Detectron2 feeds the
PyTorch model (PIL's bilinear resampling has no ONNX equivalent). The number of detections D is
dynamic (0 to DETECTIONS_PER_IMAGE); there is no padding and no valid-count output.
"""

from dataclasses import asdict, dataclass

import numpy as np
from detectron2.data import transforms as T
from torch import Tensor, nn

from ..data.mapper import pixel_mean_rgb
from ..modeling.meta_arch import FocalRetinaNet

__all__ = ["Preprocessing", "DeployableRetinaNet", "resize_image"]


@dataclass(frozen=True)
class Preprocessing:
    """What :func:`resize_image` needs to know of the model's config (saved beside the model)."""

    input_format: str  # INPUT.FORMAT: "BGR" or "RGB"
    min_size: int  # INPUT.MIN_SIZE_TEST: the shorter side after resizing
    max_size: int  # INPUT.MAX_SIZE_TEST: the longest side at most
    # (R, G, B) under transparent pixels when a picture file is read: MODEL.PIXEL_MEAN
    alpha_background: tuple = (0, 0, 0)

    @classmethod
    def from_config(cls, cfg) -> "Preprocessing":
        return cls(
            cfg.INPUT.FORMAT,
            int(cfg.INPUT.MIN_SIZE_TEST),
            int(cfg.INPUT.MAX_SIZE_TEST),
            tuple(pixel_mean_rgb(cfg)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def resize_image(image_bgr: np.ndarray, preprocessing: Preprocessing) -> tuple[np.ndarray, tuple]:
    """
    The inputs of the exported model for one (H, W, 3) uint8 BGR picture (as OpenCV reads it):
    the (3, h, w) float32 resized image in the model's input format, and (H, W). The same pixels
    as Detectron2's ``DefaultPredictor`` gives the PyTorch model.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(
            f"Expected an (H, W, 3) BGR image, got an array of shape {image_bgr.shape}."
        )
    image = image_bgr[:, :, ::-1] if preprocessing.input_format == "RGB" else image_bgr
    size = preprocessing.min_size
    resize = T.ResizeShortestEdge([size, size], preprocessing.max_size)
    resized = resize.get_transform(image).apply_image(image)
    return resized.astype("float32").transpose(2, 0, 1), tuple(image_bgr.shape[:2])


class DeployableRetinaNet(nn.Module):
    """A :class:`FocalRetinaNet`'s inference as a function of (image, output_size); see the module
    docstring. Shares the model's parameters; always float32 (the exported graph does not
    autocast)."""

    def __init__(self, model: FocalRetinaNet):
        super().__init__()
        if not isinstance(model, FocalRetinaNet):
            raise TypeError(
                f"Only FocalRetinaNet models can be exported, got {type(model).__name__} "
                "(MODEL.META_ARCHITECTURE must be FocalRetinaNet)."
            )
        self.model = model
        self.eval()  # inference only (and no "exporting in training mode" warning)
        self.size_divisibility = int(model.backbone.size_divisibility)  # of the example image

    def forward(self, image: Tensor, output_size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.detect(image, output_size)
