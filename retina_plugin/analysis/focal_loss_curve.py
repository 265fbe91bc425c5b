"""
Figure 1 of the paper: the focal loss FL(p_t) = -(1 - p_t)^gamma log(p_t) against the probability
p_t of the ground-truth class, for several gamma (gamma = 0 is cross entropy). The curves are
computed with :func:`retina_plugin.sigmoid_focal_loss` itself (no alpha, as in the paper's figure).
"""

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..losses.functional import sigmoid_focal_loss
from .outputs import save_curves

__all__ = ["FIGURE_1_GAMMAS", "focal_loss_curves", "focal_loss_figure"]

FIGURE_1_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
DEFAULT_OUTPUT = "output/focal_loss.png"


def focal_loss_curves(
    gammas=FIGURE_1_GAMMAS, num_points: int = 400
) -> tuple[Tensor, dict[float, Tensor]]:
    """p_t in (0, 1] (float64) and {gamma: FL(p_t)} computed from the logits log(p_t / (1 - p_t))."""
    p_t = torch.linspace(0, 1, num_points + 1, dtype=torch.float64)[1:]
    logits = torch.logit(p_t)  # y = 1, so p_t = sigmoid(logit); p_t = 1 gives +inf -> clamp
    logits = logits.clamp(max=50.0)
    positives = torch.ones_like(p_t)
    curves = {g: sigmoid_focal_loss(logits, positives, alpha=-1.0, gamma=g) for g in gammas}
    return p_t, curves


def focal_loss_figure(
    output: str = DEFAULT_OUTPUT, gammas=FIGURE_1_GAMMAS, points: int = 400
) -> list[str]:
    """Write Figure 1 to the PNG `output` and the plotted values beside it, as a CSV of the same
    name. Returns both paths."""
    p_t, curves = focal_loss_curves(gammas, points)
    figure = Figure(figsize=(6, 4.2), dpi=100)
    axes = figure.subplots()
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
    columns = {f"gamma={gamma:g}": loss for gamma, loss in curves.items()}
    return [output, save_curves(figure, output, "p_t", p_t, columns)]
