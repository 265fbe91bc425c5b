"""retina-plugin: the focal-loss RetinaNet of Lin et al. (2017) as a Detectron2 plug-in.

``import retina_plugin`` registers FocalRetinaNet, its heads, losses and the octave anchor
generator into Detectron2's registries.
"""

# The modules below are imported for registration.
from .config import add_retina_plugin_config, load_config
from .losses import (
    CLASSIFICATION_LOSS_REGISTRY,
    ClassificationLoss,
    OHEMCrossEntropyLoss,
    SigmoidCrossEntropyLoss,
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    build_classification_loss,
)
from .losses.functional import sigmoid_focal_loss, sigmoid_focal_loss_from_labels
from .modeling import (
    RETINA_HEAD_REGISTRY,
    FocalRetinaHead,
    FocalRetinaNet,
    OctaveAnchorGenerator,
    build_retina_head,
)

__all__ = [
    "add_retina_plugin_config",
    "load_config",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
    "OctaveAnchorGenerator",
    "RETINA_HEAD_REGISTRY",
    "FocalRetinaHead",
    "build_retina_head",
    "CLASSIFICATION_LOSS_REGISTRY",
    "ClassificationLoss",
    "SigmoidFocalLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "OHEMCrossEntropyLoss",
    "build_classification_loss",
    "FocalRetinaNet",
]
