"""The OHEM benchmark (retina_plugin.benchmark.ohem_speed) on a small image: its anchors and
labels are R50-FPN RetinaNet's, and its two states put the positives where they claim."""

import torch
from torch.nn import functional as F

from retina_plugin.benchmark.ohem_speed import bench_ohem, ohem_problem


def _cross_entropy_per_anchor(problem):
    logits, labels = problem.logits[0], problem.labels[0]
    targets = F.one_hot(labels.clamp(min=0), 81)[:, :80].float()
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)


def test_ohem_problem_states_rank_the_positives():
    fresh, learned = ohem_problem(256, "fresh"), ohem_problem(256, "learned")
    # P3-P7 of a 256 px image: 32^2 + 16^2 + 8^2 + 4^2 + 2^2 locations, 9 anchors each.
    assert fresh.anchors.shape == (9 * (1024 + 256 + 64 + 16 + 4), 4)
    assert torch.equal(fresh.labels, learned.labels)
    labels = fresh.labels[0]
    positive, negative = labels == 3, labels == 80
    assert 0 < int(positive.sum()) < 32  # fewer than f B = 0.25 * 128
    assert int(positive.sum() + negative.sum() + (labels == -1).sum()) == len(labels)
    fresh_loss, learned_loss = _cross_entropy_per_anchor(fresh), _cross_entropy_per_anchor(learned)
    assert fresh_loss[positive].min() > fresh_loss[negative].median()  # near the top
    assert learned_loss[positive].max() < learned_loss[negative].min()  # at the bottom


def test_bench_ohem_table(capsys):
    bench_ohem(128, repeats=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:4] == [
        "## OHEM loss step, one 128 x 128 image with one box, cpu",
        "| state | anchors | positives | step s | peak MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = [line.strip("| ").split(" | ") for line in lines[4:]]
    assert [row[:2] for row in rows] == [["fresh", "3069"], ["learned", "3069"]]
    assert all(float(row[3]) > 0 for row in rows)
