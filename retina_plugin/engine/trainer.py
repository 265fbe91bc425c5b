"""The plug-in's trainer: Detectron2's DefaultTrainer, with the parts it builds chosen here.

``Trainer.__init__`` builds what ``DefaultTrainer.__init__`` builds, in the same order, through
the extension points Detectron2 documents (``build_model``, ``build_optimizer``,
``build_train_loader``, ``build_lr_scheduler``, ``build_hooks``), but with pieces of its own
where Detectron2's do not fit: DDP that accepts CPU models, an AMP step that runs on any device,
and :class:`SafeCheckpointer`. Nothing of Detectron2 is patched.
"""

import logging
import os
import weakref

import torch
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.engine.hooks import EvalHook, PeriodicWriter
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import build_test_loader, build_train_loader, check_num_classes
from ..modeling.priors import classification_prior
from .amp import build_train_step
from .checkpoint import SafeCheckpointer
from .ddp import create_ddp_model
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .results import write_final_results
from .resume import check_iterations_left
from .solver_checks import check_solver_config

__all__ = ["Trainer"]


class Trainer(DefaultTrainer):
    """
    Detectron2's DefaultTrainer with COCO evaluation, dataset and solver checks, atomic
    checkpoints, a resume that falls back to the newest complete one and stops on a changed model
    or a MAX_ITER below the iterations done, no evaluation after a failure (so other workers are
    not left waiting), and DDP and AMP that work on the CPU too (Detectron2's fail there).

    ``train()`` returns the final evaluation's results and writes them to
    ``OUTPUT_DIR/final_results.json`` (with ``TEST.FOCAL_RETINA.NUM_VIS_IMAGES`` pictures).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)  # what DefaultTrainer.__init__ builds is built here
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        check_solver_config(cfg, comm.get_world_size())
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = build_train_step(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        """Detectron2's ``build_model``; with ``MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY``,
        the head starts from the training set's class frequencies (see ``priors.py``)."""
        if not cfg.MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY:
            return build_model(cfg)
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(
            cfg, class_priors=classification_prior(cfg, from_training_set=True)
        )
        return model.to(torch.device(cfg.MODEL.DEVICE))

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

    def build_hooks(self):
        hook_list = super().build_hooks()
        for hook in hook_list:
            if isinstance(hook, PeriodicWriter):
                # Detectron2 builds it with a fixed period of 20; this is our own instance.
                hook._period = self.cfg.SOLVER.FOCAL_RETINA.LOG_PERIOD
        return hook_list

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            check_iterations_left(self.checkpointer.loaded_file, self.start_iter, self.max_iter)

    def after_train(self):
        # Detectron2's EvalHook also evaluates after a failed last iteration. With several
        # workers that hangs: the failed worker's evaluation waits in collectives for workers
        # still blocked in that iteration's all-reduce, until the collective timeout. (iter <
        # max_iter here means an iteration raised: TrainerBase.train sets iter = max_iter only
        # once all ran.) The other hooks still run: timers log, writers flush.
        if self.iter >= self.max_iter:
            return super().after_train()
        all_hooks = self._hooks
        self._hooks = [hook for hook in all_hooks if not isinstance(hook, EvalHook)]
        try:
            return super().after_train()
        finally:
            self._hooks = all_hooks

    def train(self):
        super().train()
        results = getattr(self, "_last_eval_results", {})
        if comm.is_main_process():
            model = self.model.module if comm.get_world_size() > 1 else self.model
            write_final_results(self.cfg, model, results)
        return results

    @classmethod
    def evaluate_checkpoint(cls, cfg, resume: bool = False) -> dict:
        """``--eval-only``: evaluate ``MODEL.WEIGHTS`` (or, with `resume`, OUTPUT_DIR's last
        checkpoint) on ``DATASETS.TEST``, and write the results as :meth:`train` does."""
        model = build_model(cfg)  # the checkpoint holds the biases: no class-frequency prior
        SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=resume
        )
        results = cls.test(cfg, model)
        if comm.is_main_process():
            write_final_results(cfg, model, results)
        return results
