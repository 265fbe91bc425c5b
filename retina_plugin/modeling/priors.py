"""The classification prior pi (section 4.1): the class probabilities the head starts from, and
the biases that give them. One pi for every class (the paper), or per class from the training
set's class frequencies (``MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY``)."""

import logging

import torch
from detectron2.data import get_detection_dataset_dicts
from torch import Tensor

__all__ = ["classification_prior", "class_frequency_priors", "classification_bias"]

logger = logging.getLogger(__name__)

_MAX_PRIOR = 0.5


def classification_prior(cfg, from_training_set: bool = False) -> Tensor:
    """
    The (K,) float64 priors pi_k the head starts from: ``MODEL.RETINANET.PRIOR_PROB`` for every
    class; with `from_training_set` and ``MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY``, from
    the class frequencies of ``DATASETS.TRAIN``, whose records are loaded here (the train loader
    loads its own copy; for COCO this adds its json loading time once).
    """
    retina = cfg.MODEL.RETINANET
    uniform = torch.full((retina.NUM_CLASSES,), retina.PRIOR_PROB, dtype=torch.float64)
    if not (from_training_set and cfg.MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY):
        return uniform
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    priors = class_frequency_priors(dicts, retina.NUM_CLASSES, retina.PRIOR_PROB)
    logger.info(
        "Classification priors from the class frequencies of %s: min %.4g, max %.4g, mean %.4g.",
        ", ".join(cfg.DATASETS.TRAIN),
        priors.min().item(),
        priors.max().item(),
        priors.mean().item(),
    )
    return priors


def class_frequency_priors(
    dataset_dicts: list[dict], num_classes: int, prior_prob: float
) -> Tensor:
    """
    pi_k = pi * K * (n_k + 1) / (n + K): each class's prior proportional to its (add-one
    smoothed) share of the non-crowd annotations, with mean pi over the K classes; capped at
    0.5 so that no class starts as "present everywhere".

    Returns:
        (K,) float64 priors.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for record in dataset_dicts:
        for annotation in record.get("annotations", []):
            if not annotation.get("iscrowd", 0):
                counts[annotation["category_id"]] += 1
    shares = (counts + 1) / (counts.sum() + num_classes)
    return (prior_prob * num_classes * shares).clamp(max=_MAX_PRIOR)


def classification_bias(priors: Tensor, background_logit: bool) -> Tensor:
    """
    The final classification conv's bias per class, from (K,) priors.

    Sigmoid losses: b_k = -log((1 - pi_k) / pi_k), so sigmoid(b_k) = pi_k (the paper's init).
    With a background logit (softmax over K + 1): p_k = pi_k / K for the K classes and
    p_background = 1 - mean(pi), i.e. b = log p; for one pi this is Detectron's softmax init
    (background 1 - pi, the foreground sharing pi).

    Returns:
        (K,) or (K + 1,) float64 biases.
    """
    priors = priors.double()
    if not background_logit:
        return -torch.log((1 - priors) / priors)
    background = torch.log1p(-priors.mean()).reshape(1)
    return torch.cat([torch.log(priors / len(priors)), background])
