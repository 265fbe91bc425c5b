#!/usr/bin/env python
"""
Train and evaluate the focal-loss RetinaNet of retina-plugin with Detectron2's trainer.

    python train_net.py --config-file configs/quickstart.yaml
    python train_net.py --num-gpus 8 --config-file configs/COCO-Detection/focal_retina_R_50_FPN_1x.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth

Without a GPU, ``--num-gpus N`` starts N CPU processes (gloo backend).
"""

import json
import logging
import os

import torch
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from retina_plugin import load_config
from retina_plugin.data import (
    build_test_loader,
    build_train_loader,
    check_num_classes,
    register_datasets_from_config,
)
from retina_plugin.engine import (
    NoEvaluationAfterFailure,
    SafeCheckpointer,
    any_device_amp,
    any_device_ddp,
    build_lr_scheduler,
    build_optimizer,
    check_iterations_left,
    check_solver_config,
    safe_checkpointer,
)
from retina_plugin.priors import apply_frequency_prior
from retina_plugin.visualization import save_dataset_visualizations

logger = logging.getLogger("retina_plugin")


class Trainer(NoEvaluationAfterFailure, DefaultTrainer):
    """Detectron2's DefaultTrainer with COCO evaluation, dataset and solver checks, atomic
    checkpoints, a resume that falls back to the newest complete one and stops on a changed model
    or a MAX_ITER below the iterations done, no evaluation after a failure (so other workers are
    not left waiting), and DDP and AMP that work on the CPU too (Detectron2's fail there)."""

    def __init__(self, cfg):
        check_solver_config(cfg, comm.get_world_size())
        with any_device_ddp(), any_device_amp(), safe_checkpointer():
            super().__init__(cfg)
        # Before resume_or_load: a checkpoint's biases replace these.
        apply_frequency_prior(cfg, self.checkpointer.model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)  # warns when a resume changes MAX_ITER

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            check_iterations_left(self.checkpointer.loaded_file, self.start_iter, self.max_iter)

    @classmethod
    def build_train_loader(cls, cfg):
        # Boxes sanitised per dataset, images read by RobustDatasetMapper (files named on error).
        loader = build_train_loader(cfg)
        check_num_classes(cfg, cfg.DATASETS.TRAIN)
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        loader = build_test_loader(cfg, dataset_name)
        check_num_classes(cfg, [dataset_name])
        return loader


def setup(args):
    """Build the config from the file and KEY VALUE overrides; set up logging and datasets."""
    cfg = load_config(args.config_file, args.opts)  # plain YAML only: no Python tags run
    fell_back_to_cpu = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if fell_back_to_cpu:
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retina_plugin")
    if fell_back_to_cpu:
        logger.warning("No CUDA device is available: training and testing on the CPU.")
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        # Processes on one machine share its cores rather than each using all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    register_datasets_from_config(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # The final evaluation's results (DefaultTrainer.train returns them only when
        # TEST.EXPECTED_RESULTS is set).
        results = getattr(trainer, "_last_eval_results", {})
        model = trainer.model.module if comm.get_world_size() > 1 else trainer.model
    if comm.is_main_process():
        verify_results(cfg, results)
        with open(os.path.join(cfg.OUTPUT_DIR, "final_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        if cfg.TEST.FOCAL_RETINA.NUM_VIS_IMAGES > 0 and cfg.DATASETS.TEST:
            vis_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
            save_dataset_visualizations(cfg, model, cfg.DATASETS.TEST[0], vis_dir)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
