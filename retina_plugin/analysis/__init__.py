"""Analyses of a config or a model, behind the command lines in tools/: how the anchors cover the
training boxes (tools/anchor_stats.py), the distribution of the focal loss over samples (the
paper's Figure 4, tools/loss_cdf.py) and the focal loss itself (Figure 1,
tools/plot_focal_loss.py)."""

from .anchor_coverage import AnchorGrid, collect_stats, iou_bands, load_image_boxes
from .anchor_report import anchor_coverage_report
from .config import load_analysis_config
from .focal_loss_curve import FIGURE_1_GAMMAS, focal_loss_curves, focal_loss_figure
from .loss_cdf import PAPER_GAMMAS, LossSamples, collect_samples, loss_cdf_report
from .outputs import AnalysisReport

__all__ = [
    "load_analysis_config",
    "AnalysisReport",
    "AnchorGrid",
    "load_image_boxes",
    "collect_stats",
    "iou_bands",
    "anchor_coverage_report",
    "PAPER_GAMMAS",
    "LossSamples",
    "collect_samples",
    "loss_cdf_report",
    "FIGURE_1_GAMMAS",
    "focal_loss_curves",
    "focal_loss_figure",
]
