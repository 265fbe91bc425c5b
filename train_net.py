#!/usr/bin/env python
"""
Train and evaluate the focal-loss RetinaNet of retina-plugin with Detectron2's trainer.

    python train_net.py --config-file configs/quickstart.yaml
    python train_net.py --num-gpus 8 --config-file configs/COCO-Detection/focal_retina_R_50_FPN_1x.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth

Without a GPU, ``--num-gpus N`` starts N CPU processes (gloo backend). Under torchrun
(``torchrun --nproc-per-node N train_net.py ...``) each process is one worker of torchrun's job. The trainer and the setup
live in the package (``retina_plugin.engine``); to change how something is built, subclass
``Trainer`` here as in Detectron2's tools/train_net.py.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

from detectron2.engine import default_argument_parser

from retina_plugin.engine import Trainer, launch, setup


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return Trainer.evaluate_checkpoint(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args)  # Detectron2's launch, or one worker of a torchrun job
