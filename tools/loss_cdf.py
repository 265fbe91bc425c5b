#!/usr/bin/env python
"""
Figure 4 of the paper: the cumulative distribution of the normalised focal loss over positive and
over negative samples, for several gamma, from the predictions of one trained model.

    python tools/loss_cdf.py --config-file configs/quickstart.yaml --output docs/loss_cdf.png \\
        MODEL.WEIGHTS output/quickstart/model_final.pth

The model runs in eval mode over the images of --dataset (default DATASETS.TEST[0]), resized as
at test time; its anchors are labelled with its own label_anchors (its Matcher). A sample is an
(anchor, class) pair: positive for a foreground anchor and its box's class, negative for every
other class of a foreground anchor and every class of a background anchor; ignored anchors are
left out. For each gamma, the loss FL = -(1 - p_t)^gamma log(p_t) (no alpha, as the paper's
figure) of the same logits is sorted from low to high, normalised to sum to 1 and accumulated.
Writes the PNG and, beside it, a CSV of the curves; prints the share of the loss that the
hardest samples carry.
"""

import argparse
import contextlib
import csv
import os

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog, build_detection_test_loader  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K  # noqa: E402

from retina_plugin import load_config, sigmoid_focal_loss  # noqa: E402
from retina_plugin.data import (  # noqa: E402
    RobustDatasetMapper,
    register_datasets_from_config,
    sanitize_boxes,
)
from retina_plugin.engine import SafeCheckpointer  # noqa: E402

PAPER_GAMMAS = (0.0, 0.5, 1.0, 2.0)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--dataset", default=None, help="dataset name (default DATASETS.TEST[0])")
    parser.add_argument("--output", default="loss_cdf.png", help="PNG to write (CSV beside it)")
    parser.add_argument("--gammas", type=float, nargs="+", default=list(PAPER_GAMMAS))
    parser.add_argument("--max-images", type=int, default=200, help="at most this many images")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--points", type=int, default=1000, help="CSV rows per curve, minus 1")
    parser.add_argument(
        "--max-negatives",
        type=int,
        default=20_000_000,
        help="keep a uniform random subset of about this many negatives (4 bytes each); the "
        "curves of a uniform subset are those of all negatives, up to sampling noise",
    )
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def split_samples(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        logits: (R, K) one image's classification logits, anchors in the model's order.
        labels: (R,) its anchor labels from label_anchors: -1 ignored, 0..K-1 class, K background.

    Returns:
        (P,) the logits of the positive samples (each foreground anchor at its box's class) and
        (Q,) those of the negative samples (every other class of the non-ignored anchors).
    """
    num_classes = logits.shape[1]
    classes = torch.arange(num_classes, device=logits.device)
    is_positive = labels[:, None] == classes  # (R, K)
    is_negative = (labels[:, None] >= 0) & ~is_positive
    return logits[is_positive], logits[is_negative]


def focal_loss_of_samples(logits: torch.Tensor, positive: bool, gamma: float) -> torch.Tensor:
    """(S,) FL(p_t) = -(1 - p_t)^gamma log(p_t) of samples that are all positive or all negative."""
    targets = torch.full_like(logits, 1.0 if positive else 0.0)
    return sigmoid_focal_loss(logits, targets, alpha=-1.0, gamma=gamma, reduction="none")


def cumulative_normalised_loss(losses: torch.Tensor) -> torch.Tensor:
    """
    (S,) losses -> (S,) the cumulative sum of the losses sorted from low to high, divided by
    their total: entry i is the share of the loss carried by the i + 1 easiest samples.
    """
    if losses.numel() == 0:
        raise ValueError("cumulative_normalised_loss: no samples")
    ordered = losses.double().sort().values  # double: millions of small terms
    cumulative = ordered.cumsum(0)
    return cumulative / cumulative[-1].clamp(min=torch.finfo(torch.float64).tiny)


def curve_at(cumulative: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """
    The curve of (S,) `cumulative` at (F,) `fractions` of the samples: the share of the loss
    carried by the easiest floor(fraction * S) samples (0 at fraction 0, 1 at fraction 1).
    """
    count = cumulative.numel()
    # The small epsilon keeps e.g. 0.9 * 10 from rounding down to 8.
    taken = torch.floor(fractions.double() * count + 1e-6).long().clamp(0, count)
    padded = torch.cat([cumulative.new_zeros(1), cumulative])
    return padded[taken]


def hardest_share(cumulative: torch.Tensor, fraction: float) -> float:
    """The share of the loss carried by the hardest `fraction` of the samples."""
    return 1.0 - curve_at(cumulative, torch.tensor([1.0 - fraction])).item()


def loss_cdfs(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor, gammas
) -> dict[tuple[str, float], torch.Tensor]:
    """{("positive" | "negative", gamma): (S,) cumulative normalised loss} for each gamma."""
    curves = {}
    for kind, logits in (("positive", positive_logits), ("negative", negative_logits)):
        for gamma in gammas:
            losses = focal_loss_of_samples(logits, kind == "positive", gamma)
            curves[(kind, gamma)] = cumulative_normalised_loss(losses)
    return curves


def build_model_from_config(cfg):
    """The model of `cfg` with MODEL.WEIGHTS loaded, in eval mode."""
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(f"MODEL.WEIGHTS = {cfg.MODEL.WEIGHTS!r} does not exist.")
        SafeCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # weights only, never unpickled freely
    else:
        print("warning: MODEL.WEIGHTS is empty: the curves are those of an untrained model")
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


@contextlib.contextmanager
def captured_outputs(module: torch.nn.Module):
    """Record the outputs of each call of `module` into the yielded list."""
    outputs = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def predict_and_label(model, batch: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """
    Run the model on `batch` as in inference; return (N, R, K) classification logits and, per
    image, the (R,) anchor labels of the model's label_anchors.
    """
    with captured_outputs(model.head) as heads, captured_outputs(model.anchor_generator) as anchors:
        model(batch)
    pred_logits = heads[0][0]  # per level (N, A * K, H, W)
    logits = torch.cat([permute_to_N_HWA_K(x, model.num_classes) for x in pred_logits], dim=1)
    gt_instances = [x["instances"].to(model.device) for x in batch]
    labels, _ = model.label_anchors(anchors[0], gt_instances)
    return logits.float(), labels


def collect_samples(model, loader, max_negatives: int):
    """
    The logits of all positive samples (P,) and of a uniform random subset of the negative
    samples (Q,) of the images of `loader`, and the number of images.
    """
    positives, negatives, num_images = [], [], 0
    keep_rate = None
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in loader:
            logits, labels = predict_and_label(model, batch)
            for image_logits, image_labels in zip(logits, labels):
                pos, neg = split_samples(image_logits, image_labels)
                if keep_rate is None:  # one rate for all images keeps the subset uniform
                    per_image = max(neg.numel(), 1)
                    keep_rate = min(1.0, max_negatives / (per_image * len(loader.dataset)))
                if keep_rate < 1.0:
                    neg = neg[torch.rand(neg.numel(), generator=generator) < keep_rate]
                positives.append(pos.cpu())
                negatives.append(neg.cpu())
            num_images += len(batch)
    return torch.cat(positives), torch.cat(negatives), num_images


def plot(fractions: torch.Tensor, sampled: dict, output: str):
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    for panel, kind in zip(axes, ("positive", "negative")):
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
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output)
    plt.close(figure)


def write_csv(fractions: torch.Tensor, sampled: dict, path: str):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fraction"] + [f"{kind}_gamma={gamma:g}" for kind, gamma in sampled])
        for i, fraction in enumerate(fractions.tolist()):
            writer.writerow(
                [f"{fraction:.4f}"] + [f"{values[i].item():.6g}" for values in sampled.values()]
            )


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


def format_summary(rows: list[dict], num_images: int, num_pos: int, num_neg: int) -> str:
    lines = [
        f"{num_images} images: {num_pos} positive and {num_neg} negative (anchor, class) samples",
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


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    register_datasets_from_config(cfg)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if dataset is None:
        raise ValueError("DATASETS.TEST is empty: name the dataset with --dataset.")
    model = build_model_from_config(cfg)
    loader = build_loader(cfg, dataset, args.max_images, args.batch_size)
    positives, negatives, num_images = collect_samples(model, loader, args.max_negatives)
    if positives.numel() == 0:
        raise ValueError(f"dataset {dataset!r}: the {num_images} images give no positive anchor.")
    curves = loss_cdfs(positives, negatives, args.gammas)

    fractions = torch.linspace(0, 1, args.points + 1, dtype=torch.float64)
    sampled = {key: curve_at(values, fractions) for key, values in curves.items()}
    plot(fractions, sampled, args.output)
    write_csv(fractions, sampled, os.path.splitext(args.output)[0] + ".csv")
    rows = summary_rows(curves, args.gammas)
    print(f"{cfg.MODEL.WEIGHTS or '(untrained)'} on {dataset}")
    print(format_summary(rows, num_images, positives.numel(), negatives.numel()))
    print(f"wrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
