"""FocalRetinaNet's classification losses: the paper's loss family, chosen by name in YAML.

base.py: the interface, its registry, alpha; functional.py: the focal-loss kernels; one module
per loss of the family."""

# The modules below are imported for registration.
from .base import (
    CLASSIFICATION_LOSS_REGISTRY,
    ClassificationLoss,
    build_classification_loss,
    check_focal_loss_config,
    get_loss_class,
)
from .fl_star import SigmoidFocalLossStar
from .functional import sigmoid_focal_loss, sigmoid_focal_loss_from_labels
from .ohem import OHEMCrossEntropyLoss, select_hard_examples
from .sigmoid import SigmoidCrossEntropyLoss, SigmoidFocalLoss
from .softmax import SoftmaxFocalLoss

__all__ = [
    "CLASSIFICATION_LOSS_REGISTRY",
    "ClassificationLoss",
    "build_classification_loss",
    "check_focal_loss_config",
    "get_loss_class",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
    "SigmoidFocalLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "OHEMCrossEntropyLoss",
    "select_hard_examples",
]
