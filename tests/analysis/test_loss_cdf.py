"""The loss distribution of Figure 4 (retina_plugin.analysis.loss_cdf, tools/loss_cdf.py) on
hand-made logits and on tiny models, sigmoid and softmax."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from retina_plugin.analysis import PAPER_GAMMAS, collect_samples, load_analysis_config
from retina_plugin.analysis.loss_cdf import (
    build_loader,
    cumulative_normalised_loss,
    curve_at,
    focal_loss_of_samples,
    hardest_share,
    loss_cdf_report,
    loss_cdfs,
    split_samples,
)
from tests.analysis.inputs import run_tool, tiny_setup
from tests.utils import random_batch, tiny_config, unregister_datasets


def test_cumulative_loss_by_hand():
    cumulative = cumulative_normalised_loss(torch.tensor([4.0, 1.0, 3.0, 2.0]))
    assert cumulative.tolist() == pytest.approx([0.1, 0.3, 0.6, 1.0])
    fractions = torch.tensor([0.0, 0.25, 0.5, 0.74, 0.75, 0.9, 1.0])
    assert curve_at(cumulative, fractions).tolist() == pytest.approx(
        [0.0, 0.1, 0.3, 0.3, 0.6, 0.6, 1.0]
    )
    assert hardest_share(cumulative, 0.25) == pytest.approx(0.4)
    assert hardest_share(cumulative, 0.5) == pytest.approx(0.7)


def test_split_samples():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    labels = torch.tensor([0, 2, -1, 1])  # class 0, background, ignored, class 1
    positives, negatives = split_samples(logits, labels)
    assert positives.tolist() == [1.0, 8.0]
    assert negatives.tolist() == [2.0, 3.0, 4.0, 7.0]


def test_split_softmax_samples_by_hand():
    # K = 2 classes and the background logit last; one sample per non-ignored anchor.
    logits = torch.tensor([[0.0, math.log(3), 0.0], [1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    labels = torch.tensor([1, 2, -1])  # class 1, background, ignored
    positives, negatives = split_samples(logits, labels, background_logit=True)
    # Class 1 of anchor 0: p = 3 / 5, log-odds log(3 / 2). Background of anchor 1: the negative's
    # log-odds are those of "not background", log((e + e^2) / e^3).
    assert positives.tolist() == pytest.approx([math.log(3 / 2)])
    assert negatives.tolist() == pytest.approx([math.log((math.e + math.e**2) / math.e**3)])
    # FL of p_t = 3/5 and of p_t = p_background = e^3 / (e + e^2 + e^3).
    p_background = math.e**3 / (math.e + math.e**2 + math.e**3)
    for log_odds, positive, p_t in ((positives, True, 0.6), (negatives, False, p_background)):
        loss = focal_loss_of_samples(log_odds, positive, gamma=2.0)
        assert loss.tolist() == pytest.approx([-((1 - p_t) ** 2) * math.log(p_t)])


def test_loss_cdfs_by_hand():
    # Positives at p = 0.5 and 0.75; negatives at p = 0.75 (hard) and 0.25 (easy).
    positives = torch.tensor([0.0, math.log(3)])
    negatives = torch.tensor([math.log(3), -math.log(3)])
    curves = loss_cdfs(positives, negatives, gammas=(0.0, 2.0))
    # FL = -(1 - p_t)^gamma log(p_t); the easier sample's share comes first.
    easy, hard = math.log(4 / 3), math.log(2)
    assert curves[("positive", 0.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    easy, hard = 0.25**2 * math.log(4 / 3), 0.5**2 * math.log(2)
    assert curves[("positive", 2.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    easy, hard = math.log(4 / 3), math.log(4)
    assert curves[("negative", 0.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    easy, hard = 0.25**2 * math.log(4 / 3), 0.75**2 * math.log(4)
    assert curves[("negative", 2.0)].tolist() == pytest.approx([easy / (easy + hard), 1.0])
    # gamma = 2 moves the loss onto the hard negative: 97.7% of it, against 82.8% for CE.
    assert hardest_share(curves[("negative", 2.0)], 0.5) == pytest.approx(0.9775, abs=1e-4)
    assert hardest_share(curves[("negative", 0.0)], 0.5) == pytest.approx(0.8281, abs=1e-4)


def _log_p_t_by_hand(logits, labels, num_classes):
    """log p_t of the positive and of the negative samples, from (N, R, C) float64 logits."""
    if logits.shape[-1] == num_classes + 1:  # softmax: one sample per anchor, its target's p
        log_p_t = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        foreground = (labels >= 0) & (labels < num_classes)
        return log_p_t[foreground], log_p_t[labels == num_classes]
    positive = labels[..., None] == torch.arange(num_classes)  # (N, R, K) pairs
    negative = (labels[..., None] >= 0) & ~positive
    return F.logsigmoid(logits)[positive], F.logsigmoid(-logits)[negative]


@pytest.mark.parametrize("loss_name", ["SigmoidFocalLoss", "SoftmaxFocalLoss"])
def test_samples_by_hand_from_assign_anchors(loss_name):
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.LOSS_NAME = loss_name
    cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA = -1.0  # no alpha, as the figure
    cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # logits spread over several units, easy and hard samples of each kind
        model.head.cls_score.weight.normal_(std=3.0)
        model.head.cls_score.bias.normal_(std=2.0)
    batch = random_batch(num_boxes=(3, 1), num_classes=3, size=(64, 96))
    samples = collect_samples(model, [batch])
    assert samples.num_images == 2

    with torch.no_grad():
        assigned = model.assign_anchors(batch)
    logits = torch.cat(assigned.pred_logits, dim=1).double()  # (N, R, C)
    labels = torch.stack(assigned.gt_labels)  # (N, R)
    assert logits.shape[-1] == model.num_logits == (4 if loss_name == "SoftmaxFocalLoss" else 3)
    positive_log_p_t, negative_log_p_t = _log_p_t_by_hand(logits, labels, num_classes=3)
    assert len(samples.positives) == len(positive_log_p_t) > 0
    assert len(samples.negatives) == len(negative_log_p_t) > len(positive_log_p_t)

    gammas = (0.0, 0.5, 2.0)
    curves = loss_cdfs(samples.positives, samples.negatives, gammas)
    for gamma in gammas:
        for kind, log_odds, log_p_t in (
            ("positive", samples.positives, positive_log_p_t),
            ("negative", samples.negatives, negative_log_p_t),
        ):
            by_hand = -((1 - log_p_t.exp()) ** gamma) * log_p_t  # FL(p_t), no alpha
            losses = focal_loss_of_samples(log_odds, kind == "positive", gamma)
            assert losses.double().tolist() == pytest.approx(by_hand.tolist(), rel=1e-4, abs=1e-7)
            cumulative = by_hand.sort().values.cumsum(0)
            assert curves[(kind, gamma)].tolist() == pytest.approx(
                (cumulative / cumulative[-1]).tolist(), abs=1e-5
            )
    # The samples are what the model's own loss sums over: its value at gamma 2, no alpha.
    loss = model.classification_loss(logits.float(), labels, None)
    total = sum(focal_loss_of_samples(s, kind, 2.0).sum() for s, kind in zip(samples[:2], (1, 0)))
    assert total.item() == pytest.approx(loss.item(), rel=1e-4)


def test_loss_cdf_end_to_end(tmp_path):
    config_file, opts = tiny_setup(tmp_path, "loss_cdf_tiny")
    # An untrained model, checkpointed: its head starts at the prior pi = 0.01 for every logit.
    torch.manual_seed(0)
    model = build_model(tiny_config())
    weights = tmp_path / "untrained.pth"
    torch.save({"model": model.state_dict()}, weights)
    argv = ["--config-file", config_file, "--points", "10", *opts, "MODEL.WEIGHTS", weights]
    out = run_tool("loss_cdf", "--batch-size", "2", *argv, cwd=tmp_path)

    # By default the figure and its CSV go to output/ of the working directory.
    assert out.endswith("wrote output/loss_cdf.png, output/loss_cdf.csv\n")
    assert (tmp_path / "output" / "loss_cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "output" / "loss_cdf.csv") as f:
        table = list(csv.reader(f))
    kinds = [f"{k}_gamma={g}" for k in ("positive", "negative") for g in ("0", "0.5", "1", "2")]
    assert table[0] == ["fraction"] + kinds
    assert len(table) == 12 and table[6][0] == "0.5000"
    values = np.array([[float(x) for x in row[1:]] for row in table[1:]])
    assert (values[0] == 0).all() and values[-1] == pytest.approx(1.0)
    assert (np.diff(values, axis=0) >= 0).all()
    # With all logits near the prior's bias b, every sample of a kind has about the same loss:
    # the curves are close to the diagonal. A negative's logit b + delta (delta of small spread
    # sigma) gives p ~ pi e^delta and FL ~ p^(gamma + 1): lognormal, whose easiest half carries
    # Phi(-(gamma + 1) sigma) ~ 0.5 - 0.4 (gamma + 1) sigma of the loss (sigma = 0.0063 here:
    # 0.4977 at gamma 0, 0.4932 at gamma 2; the approximation is off by < 0.001). The old
    # 0.5 +- 0.01 hid a bug: the tool's forward hook kept the head's output tensor, which
    # Detectron2's inference sigmoid_()s in place when the channels-last permute + reshape is a
    # view, so the loss was that of sigmoid(p); its midpoint read 0.4999 at every gamma. Since
    # inference stopped doing that (45fb653) the true spread showed: 0.485 at gamma 2 on the
    # random-pixel images the test then used (sigma 0.0137).
    cfg = load_analysis_config(config_file, opts)
    try:
        samples = collect_samples(model.eval(), build_loader(cfg, "loss_cdf_tiny", 200, 2))
        curves = loss_cdfs(samples.positives, samples.negatives, PAPER_GAMMAS)
        fractions = torch.linspace(0, 1, 11, dtype=torch.float64)
        by_package = np.array([curve_at(curve, fractions).tolist() for curve in curves.values()])
        assert values == pytest.approx(by_package.T, rel=1e-5, abs=1e-7)  # the CSV's 6 digits
        sigma = samples.negatives.std().item()
        expected = [0.5 * math.erfc((g + 1) * sigma / math.sqrt(2)) for g in (0, 0.5, 1, 2)]
        assert values[5, 4:] == pytest.approx(expected, abs=0.002)
        assert values[5, :4] == pytest.approx(0.5, abs=0.002)  # -log p ~ -b - delta, |b| >> sigma
        assert out.startswith(f"{weights} on loss_cdf_tiny\n2 images: ")
        assert "negatives: top 10%" in out
        counts = out.split("2 images: ")[1].split()
        assert int(counts[0]) == len(samples.positives)
        assert int(counts[3]) == len(samples.negatives) > 15000
        rows = [line.split() for line in out.splitlines()[4:8]]
        assert [float(r[0]) for r in rows] == [0.0, 0.5, 1.0, 2.0]
        assert float(rows[0][2].rstrip("%")) / 100 == pytest.approx(0.1, abs=0.01)

        # A uniform subset of the negatives: about max_negatives of them, the same curves.
        with_weights = opts + ["MODEL.WEIGHTS", str(weights)]
        subset = loss_cdf_report(
            config_file, with_weights, str(tmp_path / "subset.png"), points=10, max_negatives=2000
        )
        num_subset = int(subset.text.split(" positive and ")[1].split()[0])
        assert 1700 < num_subset < 2300
        assert subset.data[0]["negative_hardest_10%"] == pytest.approx(0.1, abs=0.02)
    finally:
        unregister_datasets("loss_cdf_tiny")
