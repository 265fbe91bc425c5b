"""What the paper describes: the RetinaNet meta-architecture, its head, its anchors and the
classification prior. Imported for registration by ``retina_plugin/__init__.py``."""

from .anchor_generator import OctaveAnchorGenerator, octave_anchor_sizes
from .head import RETINA_HEAD_REGISTRY, FocalRetinaHead, build_retina_head
from .meta_arch import AnchorAssignment, FocalRetinaNet, build_anchor_matcher, in_feature_shapes
from .tta import FocalRetinaNetWithTTA

__all__ = [
    "OctaveAnchorGenerator",
    "octave_anchor_sizes",
    "RETINA_HEAD_REGISTRY",
    "FocalRetinaHead",
    "build_retina_head",
    "AnchorAssignment",
    "FocalRetinaNet",
    "FocalRetinaNetWithTTA",
    "build_anchor_matcher",
    "in_feature_shapes",
]
