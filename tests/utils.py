"""Small models, configs and batches shared by the tests."""

import os

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.structures import Boxes, Instances

from retina_plugin import load_config
from retina_plugin.data.shapes import generate_shapes_split

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(REPO_ROOT, "configs")
QUICKSTART = os.path.join(CONFIGS_DIR, "quickstart.yaml")


def plugin_config(config_file: str):
    return load_config(config_file)


def tiny_config():
    cfg = plugin_config(os.path.join(CONFIGS_DIR, "Base-FocalRetina.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.RETINANET.NUM_CONVS = 2
    # Random (not ImageNet) weights: unit-scale inputs keep the activations finite.
    cfg.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]
    return cfg


def random_batch(num_boxes=(3, 0), num_classes=80, size=(160, 192), seed=1):
    """A training batch of random images; image i has num_boxes[i] random boxes."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    batch = []
    for image_id, n in enumerate(num_boxes):
        image = torch.randint(0, 256, (3, height, width), generator=generator).float()
        corner = torch.rand(n, 2, generator=generator) * torch.tensor([width, height]) * 0.6
        extent = torch.rand(n, 2, generator=generator) * 60 + 12
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.cat([corner, corner + extent], dim=1))
        instances.gt_classes = torch.randint(0, num_classes, (n,), generator=generator)
        batch.append({"image": image, "instances": instances, "image_id": image_id})
    return batch


def generate_tiny_shapes(shapes_root):
    """The 24 + 8 shapes images of 64 px that tiny_shapes_overrides trains and tests on, written
    once (processes that would each generate it then share it)."""
    for split, count in (("train", 24), ("val", 8)):
        generate_shapes_split(str(shapes_root), split, count, image_size=64)


def tiny_shapes_overrides(shapes_root, max_iter=4, device="cpu"):
    """KEY VALUE overrides of the quickstart: 24 + 8 shapes images of 64 px, 2 images per step,
    on `device` (MODEL.DEVICE; None: the config's, Detectron2's default cuda in the quickstart).

    The tests compare CPU results (numbers measured here, 2 gloo processes), so they say so:
    without MODEL.DEVICE they would train on a GPU where there is one, and ``--num-gpus 2`` would
    mean 2 GPUs. With MODEL.DEVICE cpu, ``--num-gpus 2`` starts 2 CPU workers (gloo) whatever
    GPUs the machine has (retina_plugin.engine.launch)."""
    device_opts = [] if device is None else ["MODEL.DEVICE", device]
    return [
        "DATASETS.FOCAL_RETINA.SHAPES.ROOT", str(shapes_root),
        "DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN", "24",
        "DATASETS.FOCAL_RETINA.SHAPES.NUM_VAL", "8",
        "DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE", "64",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.WARMUP_ITERS", "2", "DATALOADER.NUM_WORKERS", "0",
        # After 4 steps few scores pass 0.05; with none, COCOEvaluator reports NaN.
        "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
        # float32 NCHW, the same on every CPU (the quick start's "native" mixed precision is
        # bfloat16 only on CPUs with AVX512-BF16 or AMX); tests of AMP turn it on themselves.
        "SOLVER.AMP.ENABLED", "False", "MODEL.FOCAL_RETINA.CHANNELS_LAST", "False",
    ] + device_opts  # fmt: skip


def tiny_overrides(shapes_root, output_dir, max_iter=4, device="cpu"):
    """The quickstart on 24 + 8 shapes images of 64 px, 2 images per step, into `output_dir`, on
    `device` (see tiny_shapes_overrides)."""
    return tiny_shapes_overrides(shapes_root, max_iter, device) + [
        "SOLVER.STEPS", "()", "SEED", "0",
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "2",
        "OUTPUT_DIR", str(output_dir),
    ]  # fmt: skip


def environment_without_gpus() -> dict:
    """This process's environment with no GPU visible (CUDA_VISIBLE_DEVICES empty), for a child
    process that must find CUDA unusable on any machine."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def parse(*argv):
    return default_argument_parser().parse_args(list(argv))


def unregister_datasets(*names):
    """Remove datasets a test registered, so that the next registration of a name succeeds."""
    for name in names:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def run_main(args):
    """What train_net.py's main() does, through the package (tests of train_net.py as users run
    it start it as a process). Gives up OUTPUT_DIR's lock afterwards, as the end of a
    train_net.py process does."""
    from retina_plugin.engine import Trainer, setup
    from retina_plugin.engine.output_lock import release_output_dir

    cfg = setup(args)
    try:
        if args.eval_only:
            return Trainer.evaluate_checkpoint(cfg, resume=args.resume)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()
    finally:
        release_output_dir(cfg.OUTPUT_DIR)
