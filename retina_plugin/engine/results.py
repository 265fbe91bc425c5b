"""What a run leaves in OUTPUT_DIR besides Detectron2's files: its final results, and pictures."""

import json
import os

from detectron2.evaluation import verify_results

from ..visualization import save_dataset_visualizations
from .output_files import write_text_atomically

__all__ = ["write_final_results"]


def write_final_results(cfg, model, results: dict):
    """Check `results` against ``TEST.EXPECTED_RESULTS``, write them to
    ``OUTPUT_DIR/final_results.json``, and draw ``TEST.FOCAL_RETINA.NUM_VIS_IMAGES`` images of
    the first test dataset with `model`'s detections into ``OUTPUT_DIR/visualizations``."""
    verify_results(cfg, results)
    write_text_atomically(
        os.path.join(cfg.OUTPUT_DIR, "final_results.json"),
        json.dumps(results, indent=2),
        kept="The checkpoints are complete: --resume evaluates the last one again.",
    )
    if cfg.TEST.FOCAL_RETINA.NUM_VIS_IMAGES > 0 and cfg.DATASETS.TEST:
        vis_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
        save_dataset_visualizations(cfg, model, cfg.DATASETS.TEST[0], vis_dir)
