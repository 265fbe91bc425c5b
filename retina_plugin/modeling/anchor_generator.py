"""Anchors on octave scales, configured with plain numbers (no Python `eval` in YAML)."""

from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator

from ..checks import check_at_least

__all__ = ["OctaveAnchorGenerator", "octave_anchor_sizes"]


def octave_anchor_sizes(base_sizes: list[float], scales_per_octave: int) -> list[list[float]]:
    """
    Anchor sizes (sqrt of area) per level: ``base * 2^(i / scales_per_octave)``.

    With base sizes (32, 64, 128, 256, 512) and 3 scales per octave these are exactly the sizes of
    Detectron2's Base-RetinaNet.yaml, ``[[x, x * 2**(1.0/3), x * 2**(2.0/3)] for x in ...]``.
    """
    return [
        [base * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        for base in base_sizes
    ]


@ANCHOR_GENERATOR_REGISTRY.register()
class OctaveAnchorGenerator(DefaultAnchorGenerator):
    """
    Detectron2's anchor generator, with sizes built from ``MODEL.FOCAL_RETINA.ANCHORS``:
    ``BASE_SIZES`` (one per level, the paper's 32 .. 512 on P3..P7) times
    ``SCALES_PER_OCTAVE`` octave scales, the paper's {2^0, 2^(1/3), 2^(2/3)}.
    Aspect ratios and offset come from ``MODEL.ANCHOR_GENERATOR`` as usual.
    """

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        anchors_cfg = cfg.MODEL.FOCAL_RETINA.ANCHORS
        base_sizes = list(anchors_cfg.BASE_SIZES)
        scales_per_octave = anchors_cfg.SCALES_PER_OCTAVE
        if len(base_sizes) != len(input_shape):
            raise ValueError(
                f"MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES = {base_sizes} has {len(base_sizes)} "
                f"entries but the head sees {len(input_shape)} feature levels "
                "(MODEL.RETINANET.IN_FEATURES): give one base size per level."
            )
        for size in base_sizes:
            check_at_least("MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES", size, 1)
        if not isinstance(scales_per_octave, int) or scales_per_octave < 1:
            raise ValueError(
                f"MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE = {scales_per_octave} must be an "
                "integer >= 1 (the paper uses 3)."
            )
        offset = cfg.MODEL.ANCHOR_GENERATOR.OFFSET
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.OFFSET = {offset} must lie in [0, 1).")
        return {
            "sizes": octave_anchor_sizes(base_sizes, scales_per_octave),
            "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            "strides": [shape.stride for shape in input_shape],
            "offset": offset,
        }
