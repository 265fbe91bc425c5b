"""A failed training ends without the final evaluation.

Detectron2's ``EvalHook`` evaluates in ``after_train`` whenever ``iter + 1 >= max_iter``, which
also holds when the last iteration raised. With several workers that is a hang: the failed worker
starts the evaluation, whose collectives wait for workers still blocked in that iteration's
gradient all-reduce, until the 30-minute collective timeout, and torch's launcher only stops the
others once a worker has exited. (Detectron2's ``TrainerBase.train`` sets ``iter = max_iter``
only once every iteration ran, so ``iter < max_iter`` in ``after_train`` means it failed.)
"""

from detectron2.engine.hooks import EvalHook

__all__ = ["NoEvaluationAfterFailure"]


class NoEvaluationAfterFailure:
    """Mixin for ``DefaultTrainer``: after a failed training, ``after_train`` skips evaluation
    hooks (the others still run: timers log, writers flush), so the worker exits at once."""

    def after_train(self):
        if self.iter >= self.max_iter:
            return super().after_train()
        all_hooks = self._hooks
        self._hooks = [hook for hook in all_hooks if not isinstance(hook, EvalHook)]
        try:
            return super().after_train()
        finally:
            self._hooks = all_hooks
