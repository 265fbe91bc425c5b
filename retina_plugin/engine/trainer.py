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
from detectron2.engine.hooks import EvalHook, PeriodicCheckpointer, PeriodicWriter
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.utils import comm
from detectron2.utils.events import (
    CommonMetricPrinter,
    TensorboardXWriter,
    get_event_storage,
)
from detectron2.utils.logger import setup_logger

from ..data import ResumableBatchStream, build_test_loader, build_train_loader, check_num_classes
from ..evaluation import build_coco_evaluator
from ..modeling import FocalRetinaNetWithTTA
from ..modeling.priors import classification_prior
from .amp import build_train_step
from .checkpoint import SafeCheckpointer
from .ddp import create_ddp_model
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .output_files import MetricsJSONWriter
from .preemption import PreemptionHook
from .results import write_final_results
from .resume import check_iterations_left
from .solver_checks import check_solver_config

__all__ = ["Trainer", "MetricPrinter"]

logger = logging.getLogger("retina_plugin")


class Trainer(DefaultTrainer):
    """
    Detectron2's DefaultTrainer with COCO evaluation, dataset and solver checks, atomic
    checkpoints, a resume that falls back to the newest complete one and stops on a changed model
    or a MAX_ITER below the iterations done, no evaluation after a failure (so other workers are
    not left waiting), DDP and AMP that work on the CPU too (Detectron2's fail there), a
    preemption signal that saves the iteration reached (``preemption.py``), and a resume that
    continues the same data stream (``retina_plugin/data/stream.py``).

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
        stream = getattr(data_loader, "dataset", None)
        self.data_stream = stream if isinstance(stream, ResumableBatchStream) else None
        self._worker_normalizers = None  # every worker's, gathered before a save
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
        return build_coco_evaluator(cfg, dataset_name, output_folder)

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
        if not comm.is_main_process():
            # Detectron2 adds its PeriodicCheckpointer on worker 0 only; here every worker takes
            # part in each save (SafeCheckpointer.save gathers every worker's loss normaliser,
            # a collective) and worker 0 alone writes. Where worker 0 has it: before EvalHook.
            index = next(
                (i for i, hook in enumerate(hook_list) if isinstance(hook, EvalHook)),
                len(hook_list),
            )
            checkpointer = PeriodicCheckpointer(
                self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD
            )
            hook_list.insert(index, checkpointer)
        for hook in hook_list:
            if isinstance(hook, PeriodicWriter):
                # Detectron2 builds it with a fixed period of 20; this is our own instance.
                hook._period = self.cfg.SOLVER.FOCAL_RETINA.LOG_PERIOD
        # Last, so that this iteration's metrics and periodic checkpoint are written first.
        hook_list.append(PreemptionHook(self.cfg.SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS))
        return hook_list

    def build_writers(self):
        """Detectron2's writers, whose logged values are medians over the last LOG_PERIOD
        iterations (Detectron2: 20 and 20); with LOG_PERIOD 1, each iteration's own values."""
        window = self.cfg.SOLVER.FOCAL_RETINA.LOG_PERIOD
        return [
            MetricPrinter(self.max_iter, window_size=window),
            MetricsJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window),
            TensorboardXWriter(self.cfg.OUTPUT_DIR, window_size=window),
        ]

    def gather_worker_state(self):
        """Collect every worker's loss normaliser (each worker's moving average of its own
        images' foreground count, unless MODEL.FOCAL_RETINA.LOSS_NORMALIZER.SYNC_ACROSS_WORKERS):
        called on every worker before a checkpoint is saved (SafeCheckpointer.save)."""
        normalizer = getattr(_unwrap(self.model), "loss_normalizer", None)
        self._worker_normalizers = (
            comm.all_gather(normalizer) if comm.get_world_size() > 1 else None
        )

    def state_dict(self):
        ret = super().state_dict()
        if self.data_stream is not None:
            ret["data_stream"] = {"seed": self.data_stream.seed}
        # Detectron2 keeps the loss normaliser's moving average as a plain attribute of the
        # model, outside its state dict; without it a resumed run's losses would differ.
        normalizer = getattr(_unwrap(self.model), "loss_normalizer", None)
        if normalizer is not None:
            ret["loss_normalizer"] = normalizer
        if self._worker_normalizers:
            ret["loss_normalizer_per_worker"] = self._worker_normalizers
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._loaded_data_stream = state_dict.get("data_stream")
        per_worker = state_dict.get("loss_normalizer_per_worker")
        if per_worker and len(per_worker) == comm.get_world_size():
            # Each worker continues its own average (a run resumed on as many workers).
            _unwrap(self.model).loss_normalizer = per_worker[comm.get_rank()]
        elif "loss_normalizer" in state_dict:
            _unwrap(self.model).loss_normalizer = state_dict["loss_normalizer"]

    def resume_or_load(self, resume=True):
        self._loaded_data_stream = None
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            check_iterations_left(self.checkpointer.loaded_file, self.start_iter, self.max_iter)
            self._continue_data_stream()

    def _continue_data_stream(self):
        """Batch start_iter of the stream the checkpoint's run trained on (see ``stream.py``)."""
        if self.data_stream is None:
            return
        saved = self._loaded_data_stream
        if saved is None:
            logger.warning(
                f"{self.checkpointer.loaded_file} holds no data-stream position (it was written "
                "before exact resume, or with DATALOADER.FOCAL_RETINA.EXACT_RESUME False): the "
                f"data order starts over at iteration {self.start_iter}."
            )
            return
        self.data_stream.start(saved["seed"], self.start_iter)

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
            write_final_results(self.cfg, _unwrap(self.model), results)
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
        if cfg.TEST.AUG.ENABLED:
            results.update(cls.test_with_TTA(cfg, model))
        if comm.is_main_process():
            write_final_results(cfg, model, results)
        return results

    @classmethod
    def test_with_TTA(cls, cfg, model) -> dict:
        """Evaluate `model` with test-time augmentation (``TEST.AUG``; see
        :mod:`retina_plugin.modeling.tta`) into ``OUTPUT_DIR/inference_TTA``; each result under
        its dataset's key + "_TTA", as Detectron2's R-CNN train_net.py does."""
        logger.info("Running inference with test-time augmentation ...")
        model = FocalRetinaNetWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, model, evaluators)
        return {f"{key}_TTA": value for key, value in results.items()}


def _unwrap(model):
    """The model inside DistributedDataParallel, if wrapped."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class MetricPrinter(CommonMetricPrinter):
    """Detectron2's metric printer, printing each iteration once. Asked to print the iteration
    it has just printed before the iteration timer has a history (a run preempted in its first
    iterations, with LOG_PERIOD 1: PeriodicWriter writes again after training), Detectron2's
    divides by zero in its ETA estimate."""

    _printed = None

    def write(self):
        iteration = get_event_storage().iter
        if iteration != self._printed:
            self._printed = iteration
            super().write()
