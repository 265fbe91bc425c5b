"""Mixed precision on every device.

Detectron2's AMPTrainer asserts CUDA in every step. FocalRetinaNet runs its backbone and head
under ``torch.autocast`` itself when ``SOLVER.AMP.ENABLED`` (bfloat16 on the CPU), so on a CPU
the trainer only has to take a plain step; on CUDA, float16 still needs AMPTrainer's gradient
scaling.
"""

import contextlib
from unittest import mock

from detectron2.engine import defaults
from detectron2.engine.train_loop import AMPTrainer, SimpleTrainer

__all__ = ["AnyDeviceAMPTrainer", "any_device_amp"]


class AnyDeviceAMPTrainer(AMPTrainer):
    """Detectron2's AMPTrainer on CUDA; SimpleTrainer's step elsewhere (the model autocasts)."""

    def run_step(self):
        if next(self.model.parameters()).device.type == "cuda":
            return super().run_step()
        return SimpleTrainer.run_step(self)


@contextlib.contextmanager
def any_device_amp():
    """Within this context, ``DefaultTrainer.__init__`` builds an AMP trainer that runs anywhere."""
    with mock.patch.object(defaults, "AMPTrainer", AnyDeviceAMPTrainer):
        yield
