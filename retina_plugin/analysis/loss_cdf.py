"""
Figure 4 of the paper: the cumulative distribution of the normalised focal loss over positive and
over negative samples, for several gamma, from the predictions of one (trained) model.

The model runs in eval mode over the images of a dataset, resized as at test time, with their
boxes; :meth:`FocalRetinaNet.assign_anchors` gives its per-anchor logits and its anchor labels
(its own Matcher), exactly as training computes them before its loss. Ignored anchors are left
out. What a sample is depends on the head's C logits per anchor (``model.num_logits``):

- sigmoid losses (C = K): a sample is an (anchor, class) pair with p = sigmoid(logit). It is
  positive for a foreground anchor at its box's class (p_t = p), negative for every other class
  of a foreground anchor and every class of a background anchor (p_t = 1 - p).
- ``SoftmaxFocalLoss`` (C = K + 1, the background logit last): a sample is a non-ignored anchor,
  with p_t the softmax probability of its target, as the softmax focal loss has it: positive for
  a foreground anchor (p_t = p of its class), negative for a background anchor (p_t = p of the
  background column).

Each sample is kept as one number, the log-odds s of its "positive" probability: the class logit
(sigmoid), or log(p_k / (1 - p_k)) for a positive and log((1 - p_bg) / p_bg) for a negative
(softmax), computed with logsumexp. Then p_t = sigmoid(s) for a positive sample and sigmoid(-s)
for a negative one, and the focal loss FL = -(1 - p_t)^gamma log(p_t) (no alpha, as the paper's
figure) is computed from log p_t = logsigmoid(+-s) and log(1 - p_t) = logsigmoid(-+s), finite
for any logits. For each gamma, the losses of one kind are sorted from low to high, normalised
to sum to 1 and accumulated.
"""

import os
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from matplotlib.figure import Figure
from torch import Tensor

from ..data import RobustDatasetMapper, sanitize_boxes
from ..engine import SafeCheckpointer
from .config import load_analysis_config
from .outputs import AnalysisReport, save_curves

__all__ = [
    "PAPER_GAMMAS",
    "split_samples",
    "focal_loss_of_samples",
    "cumulative_normalised_loss",
    "curve_at",
    "hardest_share",
    "loss_cdfs",
    "build_model_with_weights",
    "build_loader",
    "LossSamples",
    "collect_samples",
    "summary_rows",
    "format_summary",
    "loss_cdf_report",
]

PAPER_GAMMAS = (0.0, 0.5, 1.0, 2.0)
DEFAULT_OUTPUT = "output/loss_cdf.png"
_UNTRAINED_WARNING = "warning: MODEL.WEIGHTS is empty: the curves are those of an untrained model"


def split_samples(
    logits: Tensor, labels: Tensor, background_logit: bool = False
) -> tuple[Tensor, Tensor]:
    """
    Args:
        logits: (R, C) one image's classification logits, anchors in the model's order; C = K,
            or K + 1 with `background_logit` (the last column).
        labels: (R,) its anchor labels: -1 ignored, 0..K-1 class, K background.

    Returns:
        (P,) and (Q,) the log-odds of the positive and of the negative samples (see the module
        docstring); for C = K these are the logits of the (anchor, class) pairs themselves.
    """
    if background_logit:
        return _split_softmax_samples(logits, labels)
    classes = torch.arange(logits.shape[1], device=logits.device)
    is_positive = labels[:, None] == classes  # (R, K)
    is_negative = (labels[:, None] >= 0) & ~is_positive
    return logits[is_positive], logits[is_negative]


def _split_softmax_samples(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    background = logits.shape[1] - 1
    target = labels.clamp(min=0)[:, None]  # (R, 1); ignored anchors are dropped below
    target_logit = logits.gather(1, target).squeeze(1)  # (R,)
    others = logits.scatter(1, target, float("-inf")).logsumexp(dim=1)  # (R,)
    target_log_odds = target_logit - others  # log(p_t / (1 - p_t))
    is_positive = (labels >= 0) & (labels != background)
    return target_log_odds[is_positive], -target_log_odds[labels == background]


def focal_loss_of_samples(log_odds: Tensor, positive: bool, gamma: float) -> Tensor:
    """(S,) FL(p_t) = -(1 - p_t)^gamma log(p_t) of samples that are all positive (p_t =
    sigmoid(log_odds)) or all negative (p_t = sigmoid(-log_odds))."""
    signed = log_odds if positive else -log_odds
    log_p_t, log_rest = F.logsigmoid(signed), F.logsigmoid(-signed)  # log p_t, log(1 - p_t)
    return -torch.exp(gamma * log_rest) * log_p_t


def cumulative_normalised_loss(losses: Tensor) -> Tensor:
    """
    (S,) losses -> (S,) the cumulative sum of the losses sorted from low to high, divided by
    their total: entry i is the share of the loss carried by the i + 1 easiest samples.
    """
    if losses.numel() == 0:
        raise ValueError("cumulative_normalised_loss: no samples")
    ordered = losses.double().sort().values  # double: millions of small terms
    cumulative = ordered.cumsum(0)
    return cumulative / cumulative[-1].clamp(min=torch.finfo(torch.float64).tiny)


def curve_at(cumulative: Tensor, fractions: Tensor) -> Tensor:
    """
    The curve of (S,) `cumulative` at (F,) `fractions` of the samples: the share of the loss
    carried by the easiest floor(fraction * S) samples (0 at fraction 0, 1 at fraction 1).
    """
    count = cumulative.numel()
    # The small epsilon keeps e.g. 0.9 * 10 from rounding down to 8.
    taken = torch.floor(fractions.double() * count + 1e-6).long().clamp(0, count)
    padded = torch.cat([cumulative.new_zeros(1), cumulative])
    return padded[taken]


def hardest_share(cumulative: Tensor, fraction: float) -> float:
    """The share of the loss carried by the hardest `fraction` of the samples."""
    return 1.0 - curve_at(cumulative, torch.tensor([1.0 - fraction])).item()


def loss_cdfs(
    positive_log_odds: Tensor, negative_log_odds: Tensor, gammas
) -> dict[tuple[str, float], Tensor]:
    """{("positive" | "negative", gamma): (S,) cumulative normalised loss} for each gamma."""
    curves = {}
    for kind, log_odds in (("positive", positive_log_odds), ("negative", negative_log_odds)):
        for gamma in gammas:
            losses = focal_loss_of_samples(log_odds, kind == "positive", gamma)
            curves[(kind, gamma)] = cumulative_normalised_loss(losses)
    return curves


def build_model_with_weights(cfg):
    """The model of `cfg` with MODEL.WEIGHTS (if any) loaded as weights only, in eval mode."""
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(f"MODEL.WEIGHTS = {cfg.MODEL.WEIGHTS!r} does not exist.")
        SafeCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # weights only, never unpickled freely
    return model.eval()


def build_loader(cfg, dataset_name: str, max_images: int, batch_size: int):
    """Batches of the first `max_images` images, resized as at test time, with their boxes."""
    if dataset_name not in DatasetCatalog.list():
        raise KeyError(
            f"dataset {dataset_name!r} is not registered; name one of DATASETS.TEST, "
            "DATASETS.FOCAL_RETINA.COCO or a Detectron2 built-in."
        )
    # Sanitised as the training boxes are, so anchors are labelled as in training.
    records, _ = sanitize_boxes(DatasetCatalog.get(dataset_name)[:max_images], dataset_name)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
    # The train mapper keeps the annotations; its only augmentation here is the test-time resize.
    mapper_args = RobustDatasetMapper.from_config(cfg, is_train=True)
    mapper = RobustDatasetMapper(**{**mapper_args, "augmentations": [resize]})
    return build_detection_test_loader(
        records, mapper=mapper, batch_size=batch_size, num_workers=cfg.DATALOADER.NUM_WORKERS
    )


class LossSamples(NamedTuple):
    """positives (P,), negatives (Q,): the samples' log-odds (see the module docstring)."""

    positives: Tensor
    negatives: Tensor
    num_images: int


def collect_samples(
    model, batches, max_negatives: Optional[int] = None, num_images: Optional[int] = None
) -> LossSamples:
    """
    All positive samples of the images of `batches` (lists of dataset dicts with "instances")
    and all negative ones, or a uniform random subset of about `max_negatives` of those, for
    `num_images` images in all (default: ``len(batches.dataset)``).
    """
    background_logit = model.classification_loss.background_logit  # C = K + 1
    positives, negatives, seen = [], [], 0
    keep_rate = None
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in batches:
            assigned = model.assign_anchors(batch)
            logits = torch.cat(assigned.pred_logits, dim=1)  # (N, R, C)
            for image_logits, image_labels in zip(logits, assigned.gt_labels):
                pos, neg = split_samples(image_logits, image_labels, background_logit)
                if keep_rate is None:  # one rate for all images keeps the subset uniform
                    keep_rate = _keep_rate(neg.numel(), max_negatives, num_images, batches)
                if keep_rate < 1.0:
                    neg = neg[torch.rand(neg.numel(), generator=generator) < keep_rate]
                positives.append(pos.cpu())
                negatives.append(neg.cpu())
            seen += len(batch)
    empty = torch.zeros(0)
    return LossSamples(torch.cat([empty, *positives]), torch.cat([empty, *negatives]), seen)


def _keep_rate(num_per_image: int, max_negatives, num_images, batches) -> float:
    if max_negatives is None:
        return 1.0
    num_images = num_images or len(batches.dataset)
    return min(1.0, max_negatives / (max(num_per_image, 1) * num_images))


def plot(fractions: Tensor, sampled: dict, output: str):
    """Write the PNG `output` of the curves (one panel per kind) and the CSV beside it; returns
    the CSV's path."""
    figure = Figure(figsize=(10, 4.2), dpi=100)
    for panel, kind in zip(figure.subplots(1, 2), ("positive", "negative")):
        for (curve_kind, gamma), values in sampled.items():
            if curve_kind == kind:
                panel.plot(fractions.numpy(), values.numpy(), label=f"γ = {gamma:g}")
        panel.set_xlim(0, 1)
        panel.set_ylim(0, 1)
        panel.set_xlabel(f"fraction of {kind} samples")
        panel.set_ylabel("cumulative normalized loss")
        panel.set_title(f"{kind} samples")
        panel.legend(loc="upper left")
    figure.suptitle("Cumulative distribution of the focal loss (Lin et al. 2017, Figure 4)")
    columns = {f"{kind}_gamma={gamma:g}": values for (kind, gamma), values in sampled.items()}
    return save_curves(figure, output, "fraction", fractions, columns)


def summary_rows(curves: dict, gammas) -> list[dict]:
    """Per gamma: the loss share of the hardest 20% of positives and 10% / 1% of negatives, and
    the fraction of the hardest negatives that carries half of the negatives' loss."""
    rows = []
    for gamma in gammas:
        negative = curves[("negative", gamma)]
        half = (negative < 0.5).sum().item() / negative.numel()  # easiest share below half the loss
        rows.append(
            {
                "gamma": gamma,
                "positive_hardest_20%": hardest_share(curves[("positive", gamma)], 0.2),
                "negative_hardest_10%": hardest_share(negative, 0.1),
                "negative_hardest_1%": hardest_share(negative, 0.01),
                "negatives_for_half_the_loss": 1.0 - half,
            }
        )
    return rows


def format_summary(
    rows: list[dict], num_images: int, num_pos: int, num_neg: int, unit: str = "(anchor, class)"
) -> str:
    """The table printed by tools/loss_cdf.py; `unit` names a sample ("anchor" for softmax)."""
    lines = [
        f"{num_images} images: {num_pos} positive and {num_neg} negative {unit} samples",
        "share of the loss carried by the hardest samples:",
        "gamma  positives: top 20%  negatives: top 10%  top 1%  negatives carrying half",
    ]
    for r in rows:
        lines.append(
            f"{r['gamma']:>5g}  {r['positive_hardest_20%']:>18.1%}  "
            f"{r['negative_hardest_10%']:>18.2%}  {r['negative_hardest_1%']:>6.2%}  "
            f"{r['negatives_for_half_the_loss']:>23.2%}"
        )
    return "\n".join(lines)


def loss_cdf_report(
    config_file: str,
    opts=(),
    output: str = DEFAULT_OUTPUT,
    *,
    dataset: Optional[str] = None,
    gammas=PAPER_GAMMAS,
    max_images: int = 200,
    batch_size: int = 8,
    points: int = 1000,
    max_negatives: Optional[int] = 20_000_000,
) -> AnalysisReport:
    """
    Figure 4 for the model of the config `config_file` with the KEY VALUE overrides `opts`
    (MODEL.WEIGHTS) on the first `max_images` images of `dataset` (default DATASETS.TEST[0]),
    `batch_size` images per forward pass: the PNG `output` and beside it a CSV of the curves at
    `points` + 1 fractions. With `max_negatives`, a uniform random subset of about that many
    negatives is kept (4 bytes each); its curves are those of all negatives up to sampling noise.
    """
    cfg = load_analysis_config(config_file, opts)
    dataset = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if dataset is None:
        raise ValueError("DATASETS.TEST is empty: name the dataset with --dataset.")
    model = build_model_with_weights(cfg)
    loader = build_loader(cfg, dataset, max_images, batch_size)
    samples = collect_samples(model, loader, max_negatives)
    if samples.positives.numel() == 0:
        raise ValueError(
            f"dataset {dataset!r}: the {samples.num_images} images give no positive anchor."
        )
    curves = loss_cdfs(samples.positives, samples.negatives, gammas)

    fractions = torch.linspace(0, 1, points + 1, dtype=torch.float64)
    sampled = {key: curve_at(values, fractions) for key, values in curves.items()}
    csv_path = plot(fractions, sampled, output)
    rows = summary_rows(curves, gammas)
    unit = "anchor" if model.classification_loss.background_logit else "(anchor, class)"
    lines = [] if cfg.MODEL.WEIGHTS else [_UNTRAINED_WARNING]
    lines.append(f"{cfg.MODEL.WEIGHTS or '(untrained)'} on {dataset}")
    table = format_summary(
        rows, samples.num_images, samples.positives.numel(), samples.negatives.numel(), unit
    )
    return AnalysisReport(rows, "\n".join(lines + [table]), [output, csv_path])
