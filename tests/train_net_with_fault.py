"""train_net.py with one worker that fails during training, for tests/test_multiprocess_faults.py.

    python -m tests.train_net_with_fault --fail-rank 1 --fail-at-iter 1 \\
        --num-gpus 2 --config-file configs/quickstart.yaml KEY VALUE ...

The worker of rank ``--fail-rank`` raises ``RuntimeError`` as iteration ``--fail-at-iter``
begins (as a data or forward error would), so every other worker waits in that iteration's
gradient all-reduce for the failed one: the situation in which a run hangs until the collective
timeout unless the failure is propagated.
"""

from detectron2.engine import HookBase, default_argument_parser
from detectron2.utils import comm

from retina_plugin.engine import Trainer, launch, setup


class FailAtIteration(HookBase):
    """Raise on one rank as a given iteration begins."""

    def __init__(self, rank: int, iteration: int):
        self.rank, self.iteration = rank, iteration

    def before_step(self):
        if comm.get_rank() == self.rank and self.trainer.iter == self.iteration:
            raise RuntimeError(
                f"Injected fault: rank {self.rank} fails at iteration {self.iteration}."
            )


class TrainerWithFault(Trainer):
    def __init__(self, cfg, fail_rank: int, fail_at_iter: int):
        self._fault = FailAtIteration(fail_rank, fail_at_iter)
        super().__init__(cfg)

    def build_hooks(self):
        return super().build_hooks() + [self._fault]


def main(args):
    trainer = TrainerWithFault(setup(args), args.fail_rank, args.fail_at_iter)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--fail-rank", type=int, required=True)
    parser.add_argument("--fail-at-iter", type=int, required=True)
    args = parser.parse_args()
    launch(main, args)
