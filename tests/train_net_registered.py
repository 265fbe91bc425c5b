"""train_net.py as Detectron2's tutorials have users write it: the data registered with
Detectron2's own ``register_coco_instances``, not through DATASETS.FOCAL_RETINA.COCO. For
tests/data/test_registered_datasets.py.

    python -m tests.train_net_registered --train-json J --val-json J --image-root DIR \\
        --config-file configs/quickstart.yaml KEY VALUE ...
"""

from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser

from retina_plugin.engine import Trainer, launch, setup


def main(args):
    register_coco_instances("my_train", {}, args.train_json, args.image_root)
    register_coco_instances("my_val", {}, args.val_json, args.image_root)
    args.opts += ["DATASETS.TRAIN", "('my_train',)", "DATASETS.TEST", "('my_val',)"]
    cfg = setup(args)
    if args.eval_only:
        return Trainer.evaluate_checkpoint(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--val-json", required=True)
    parser.add_argument("--image-root", required=True)
    launch(main, parser.parse_args())
