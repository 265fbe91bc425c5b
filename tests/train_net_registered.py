"""train_net.py as Detectron2's tutorials have users use it: the data registered with
Detectron2's own ``register_coco_instances`` before train_net.py's ``main`` runs, not through
DATASETS.FOCAL_RETINA.COCO. For tests/data/test_registered_datasets.py.

    python -m tests.train_net_registered --train-json J --val-json J --image-root DIR \\
        --config-file configs/quickstart.yaml KEY VALUE ...
"""

import os

from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser

from retina_plugin.engine import launch
from retina_plugin.slurm.job import load_main

TRAIN_NET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train_net.py"
)


def main(args):
    register_coco_instances("my_train", {}, args.train_json, args.image_root)
    register_coco_instances("my_val", {}, args.val_json, args.image_root)
    args.opts += ["DATASETS.TRAIN", "('my_train',)", "DATASETS.TEST", "('my_val',)"]
    return load_main(TRAIN_NET)(args)  # train_net.py's own main


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--train-json", required=True)
    parser.add_argument("--val-json", required=True)
    parser.add_argument("--image-root", required=True)
    launch(main, parser.parse_args())
