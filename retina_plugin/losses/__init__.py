"""FocalRetinaNet's classification losses: the paper's loss family, chosen by name in YAML."""

# The modules below are imported for registration.
from .fl_star import SigmoidFocalLossStar
from .ohem import OHEMCrossEntropyLoss, select_hard_examples
from .registry import (
    CLASSIFICATION_LOSS_REGISTRY,
    ClassificationLoss,
    build_classification_loss,
    check_focal_loss_config,
    get_loss_class,
)
from .sigmoid import SigmoidCrossEntropyLoss, SigmoidFocalLoss
from .softmax import SoftmaxFocalLoss

__all__ = [
    "CLASSIFICATION_LOSS_REGISTRY",
    "ClassificationLoss",
    "build_classification_loss",
    "check_focal_loss_config",
    "get_loss_class",
    "SigmoidFocalLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "OHEMCrossEntropyLoss",
    "select_hard_examples",
]
