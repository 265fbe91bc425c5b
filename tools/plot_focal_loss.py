#!/usr/bin/env python
"""
Figure 1 of the paper: the focal loss FL(p_t) = -(1 - p_t)^gamma log(p_t) against the probability
p_t of the ground-truth class, for several gamma (gamma = 0 is cross entropy). The curves are
computed with retina_plugin.sigmoid_focal_loss itself (no alpha, as in the paper's figure).

    python tools/plot_focal_loss.py --output docs/focal_loss.png

writes the PNG and, beside it, a CSV of the plotted values.
"""

import argparse
import csv
import os

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from retina_plugin import sigmoid_focal_loss  # noqa: E402

PAPER_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)


def focal_loss_curves(gammas=PAPER_GAMMAS, num_points: int = 400):
    """p_t in (0, 1] (float64) and {gamma: FL(p_t)} computed from the logits log(p_t / (1 - p_t))."""
    p_t = torch.linspace(0, 1, num_points + 1, dtype=torch.float64)[1:]
    logits = torch.logit(p_t)  # y = 1, so p_t = sigmoid(logit); p_t = 1 gives +inf -> clamp
    logits = logits.clamp(max=50.0)
    positives = torch.ones_like(p_t)
    curves = {g: sigmoid_focal_loss(logits, positives, alpha=-1.0, gamma=g) for g in gammas}
    return p_t, curves


def plot(p_t, curves, output: str):
    figure, axes = plt.subplots(figsize=(6, 4.2), dpi=100)
    for gamma, loss in curves.items():
        label = f"γ = {gamma:g}" + (" (CE)" if gamma == 0 else "")
        axes.plot(p_t.numpy(), loss.numpy(), label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 5)
    axes.set_xlabel("probability of ground truth class")
    axes.set_ylabel("loss")
    axes.axvspan(0.6, 1.0, color="0.92")
    axes.text(0.8, 4.6, "well-classified\nexamples", ha="center", va="top", fontsize=9)
    axes.legend()
    axes.set_title("Focal loss (Lin et al. 2017, Figure 1), from retina_plugin")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output)
    plt.close(figure)


def write_csv(p_t, curves, path: str):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["p_t"] + [f"gamma={g:g}" for g in curves])
        for i, value in enumerate(p_t.tolist()):
            writer.writerow(
                [f"{value:.4f}"] + [f"{curve[i].item():.6g}" for curve in curves.values()]
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--output", default="docs/focal_loss.png", help="PNG to write")
    parser.add_argument("--gammas", type=float, nargs="+", default=list(PAPER_GAMMAS))
    parser.add_argument("--points", type=int, default=400, help="points per curve")
    args = parser.parse_args(argv)
    p_t, curves = focal_loss_curves(args.gammas, args.points)
    plot(p_t, curves, args.output)
    write_csv(p_t, curves, os.path.splitext(args.output)[0] + ".csv")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
