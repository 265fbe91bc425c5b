"""Mixed precision on every device.

Detectron2's AMPTrainer asserts CUDA in every step. FocalRetinaNet runs its backbone and head
under ``torch.autocast`` itself when ``SOLVER.AMP.ENABLED`` (bfloat16 on the CPU), so on a CPU
the trainer only has to take a plain step; on CUDA, float16 still needs AMPTrainer's gradient
scaling.
"""

import torch
from detectron2.engine.train_loop import AMPTrainer, SimpleTrainer

__all__ = ["AnyDeviceAMPTrainer", "build_train_step"]


class AnyDeviceAMPTrainer(AMPTrainer):
    """Detectron2's AMPTrainer on CUDA; SimpleTrainer's step elsewhere (the model autocasts)."""

    def run_step(self):
        if next(self.model.parameters()).device.type == "cuda":
            return super().run_step()
        return SimpleTrainer.run_step(self)


def build_train_step(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """The object that runs one iteration: AnyDeviceAMPTrainer with ``SOLVER.AMP.ENABLED``, else
    Detectron2's SimpleTrainer (what DefaultTrainer builds, with AMP that runs anywhere)."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    on_cuda = next(model.parameters()).device.type == "cuda"
    # torch.amp's scaler (torch.cuda.amp's is deprecated); disabled off CUDA, as before.
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda)
    return AnyDeviceAMPTrainer(model, data_loader, optimizer, grad_scaler=scaler)
