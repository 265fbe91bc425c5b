"""retina-plugin's config keys: everything new lives under ``MODEL.FOCAL_RETINA``.

The keys Detectron2 already has keep their meaning and are read from where Detectron2 puts them:
``MODEL.RETINANET.FOCAL_LOSS_ALPHA`` (alpha), ``FOCAL_LOSS_GAMMA`` (gamma), ``PRIOR_PROB`` (pi),
``IOU_THRESHOLDS`` / ``IOU_LABELS`` (the background / ignore / foreground IoU bands),
``MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS`` and so on.
"""

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_retina_plugin_config", "load_config"]


def add_retina_plugin_config(cfg: CN) -> CN:
    """Add retina-plugin's keys, with their defaults, to `cfg` (in place) and return it."""
    _C = cfg
    _C.MODEL.FOCAL_RETINA = CN()
    # Name of the head in retina_plugin's RETINA_HEAD_REGISTRY: the paper's classification and
    # box subnets (4 x 3x3 conv + ReLU each, shared over P3-P7), as Detectron2's RetinaNetHead.
    _C.MODEL.FOCAL_RETINA.HEAD_NAME = "FocalRetinaHead"
    # Name of the classification loss in retina_plugin's CLASSIFICATION_LOSS_REGISTRY; alpha and
    # gamma are MODEL.RETINANET.FOCAL_LOSS_ALPHA / FOCAL_LOSS_GAMMA (alpha < 0: no balancing).
    # "SigmoidFocalLoss": FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) (eq. 5; the default).
    # "SigmoidCrossEntropyLoss": CE(p_t) = -alpha_t log(p_t) (Table 1a; gamma is not used).
    # "SigmoidFocalLossStar": FL* = -alpha_t log(sigmoid(gamma x_t + beta)) / gamma (appendix A,
    #     Table 3; beta = FL_STAR.BETA).
    # "SoftmaxFocalLoss": FL over a softmax of K + 1 logits, background as a class.
    # "OHEMCrossEntropyLoss": cross entropy of the hardest anchors only (Table 1d; see OHEM).
    _C.MODEL.FOCAL_RETINA.LOSS_NAME = "SigmoidFocalLoss"
    # One alpha_k per class (K = MODEL.RETINANET.NUM_CLASSES values in [0, 1]) for the sigmoid
    # losses: alpha_k weighs the positives of class k, 1 - alpha_k its negatives. Empty: every
    # class uses MODEL.RETINANET.FOCAL_LOSS_ALPHA.
    _C.MODEL.FOCAL_RETINA.CLASS_ALPHAS = []
    # Start each class's classification bias from its frequency in DATASETS.TRAIN rather than
    # one prior for all: pi_k = pi * K * (n_k + 1) / (n + K), pi = MODEL.RETINANET.PRIOR_PROB,
    # n_k the class's annotations (mean pi_k = pi; capped at 0.5). Applied when training starts
    # from scratch; a checkpoint's biases replace it.
    _C.MODEL.FOCAL_RETINA.PRIOR_FROM_CLASS_FREQUENCY = False
    # FL* of appendix A (LOSS_NAME "SigmoidFocalLossStar"): p*_t = sigmoid(gamma x_t + beta).
    _C.MODEL.FOCAL_RETINA.FL_STAR = CN()
    # beta; Table 3: gamma = 2, beta = 1 -> 33.8 AP; gamma = 4, beta = 0 -> 33.9 AP.
    _C.MODEL.FOCAL_RETINA.FL_STAR.BETA = 1.0
    # Online hard example mining (LOSS_NAME "OHEMCrossEntropyLoss", Table 1d): per image, anchors
    # are scored by their cross entropy, NMS over the anchor boxes removes near-duplicates, and
    # only the highest-loss ones get a classification loss.
    _C.MODEL.FOCAL_RETINA.OHEM = CN()
    # B, the anchors kept per image (the paper tries 128, 256, 512).
    _C.MODEL.FOCAL_RETINA.OHEM.BATCH_SIZE_PER_IMAGE = 128
    # Largest share of positives; 0.25 is the paper's (and SSD's) 1:3 positive:negative ratio,
    # which also caps the negatives at 3 per positive. Negative (e.g. -1): no ratio.
    _C.MODEL.FOCAL_RETINA.OHEM.POSITIVE_FRACTION = 0.25
    # IoU of the NMS over anchors; 1.0 disables it.
    _C.MODEL.FOCAL_RETINA.OHEM.NMS_THRESH = 0.7
    # Compile the fused focal loss with torch.compile (falls back to eager, with a logged reason,
    # where the compiler is missing). The environment variable RETINA_PLUGIN_COMPILE=0 also
    # turns it off.
    _C.MODEL.FOCAL_RETINA.COMPILE = True
    # With SOLVER.AMP.ENABLED, the backbone and head run under torch.autocast with this dtype, in
    # training and inference; losses, box decoding and NMS stay float32. "auto": bfloat16 on the
    # CPU, float16 on CUDA; "native": the fastest 16-bit type the device has in hardware (bfloat16
    # on Ampere or later GPUs and on CPUs with AVX512-BF16 or AMX, float16 on older GPUs) and
    # float32 on a CPU without (emulated bfloat16 is slower than float32); or "bfloat16",
    # "float16". float16 on CUDA trains with gradient scaling (Detectron2's AMPTrainer).
    _C.MODEL.FOCAL_RETINA.AMP_DTYPE = "auto"
    # Keep conv weights, and so activations, channels-last (NHWC). Measured on 2 CPU cores at
    # R50-FPN 2 x 512 px: training steps 10-11% and inference 10-14% faster (docs/PERFORMANCE.md,
    # two machines); checkpoints are unchanged.
    # Off by default so that, with Detectron2's own configs, results equal Detectron2's to the
    # last bit (other convolution kernels round differently: gradients differ by ~1e-3 of their
    # scale, boxes by ~1e-3 px); configs/Base-FocalRetina.yaml turns it on.
    _C.MODEL.FOCAL_RETINA.CHANNELS_LAST = False

    # Anchors of MODEL.ANCHOR_GENERATOR.NAME = "OctaveAnchorGenerator", written without the
    # Python `eval` that Detectron2's Base-RetinaNet.yaml needs. Level l gets the sizes
    # BASE_SIZES[l] * 2^(i / SCALES_PER_OCTAVE), i = 0 .. SCALES_PER_OCTAVE - 1, each with every
    # aspect ratio of MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS.
    # Inference options beyond Detectron2's MODEL.RETINANET.*_TEST (the paper: a 0.05 score
    # threshold, top 1000 per level, NMS 0.5 within each class).
    _C.MODEL.FOCAL_RETINA.TEST = CN()
    # One NMS over all classes (a box suppresses overlapping boxes of any class), instead of
    # the paper's per-class NMS.
    _C.MODEL.FOCAL_RETINA.TEST.CLASS_AGNOSTIC_NMS = False
    # One score threshold per class (K values in [0, 1]) in place of SCORE_THRESH_TEST (the
    # paper's 0.05 for every class); [] keeps SCORE_THRESH_TEST.
    _C.MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS = []

    _C.MODEL.FOCAL_RETINA.ANCHORS = CN()
    # Anchor side at scale 2^0 on each pyramid level P3..P7: the paper's areas 32^2 .. 512^2.
    _C.MODEL.FOCAL_RETINA.ANCHORS.BASE_SIZES = [32, 64, 128, 256, 512]
    # Scales per octave: 3 gives the paper's {2^0, 2^(1/3), 2^(2/3)} (Table 1c); 1 gives one.
    _C.MODEL.FOCAL_RETINA.ANCHORS.SCALES_PER_OCTAVE = 3

    # The losses are divided by the number of foreground anchors (the paper's normaliser).
    _C.MODEL.FOCAL_RETINA.LOSS_NORMALIZER = CN()
    # Momentum of the moving average of that count. Detectron2 uses 0.9 because with 1-2 images
    # per GPU the count varies a lot from step to step; 0 uses each step's count, as the paper.
    _C.MODEL.FOCAL_RETINA.LOSS_NORMALIZER.MOMENTUM = 0.9
    # False (default, as Detectron2): each worker normalises by its own images' count, so results
    # and checkpoints match Detectron2's RetinaNet. True: the count is averaged over all workers
    # first, so the loss is the minibatch's total loss over its total foreground anchors, the same
    # for any number of GPUs (the paper's normaliser for the whole minibatch).
    _C.MODEL.FOCAL_RETINA.LOSS_NORMALIZER.SYNC_ACROSS_WORKERS = False

    # Datasets that train_net.py registers before training (no Python needed).
    _C.DATASETS.FOCAL_RETINA = CN()
    # COCO-format datasets as [name, json_file, image_root] triples, registered with Detectron2's
    # register_coco_instances, e.g. [["my_train", "train.json", "images/"]].
    _C.DATASETS.FOCAL_RETINA.COCO = []
    # The embedded synthetic dataset "shapes_train" / "shapes_val" (generated on first use).
    _C.DATASETS.FOCAL_RETINA.SHAPES = CN()
    # Cache folder; "" means $RETINA_PLUGIN_DATASETS or ~/.cache/retina_plugin/shapes.
    _C.DATASETS.FOCAL_RETINA.SHAPES.ROOT = ""
    _C.DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN = 1500
    _C.DATASETS.FOCAL_RETINA.SHAPES.NUM_VAL = 200
    _C.DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE = 128
    _C.DATASETS.FOCAL_RETINA.SHAPES.SEED = 0

    _C.DATALOADER.FOCAL_RETINA = CN()
    # A resumed run continues the data stream of the run it resumes: batch i holds the same images
    # with the same augmentations (the sampler's seed is saved in the checkpoint). False:
    # Detectron2's own train loader, whose stream starts over on --resume.
    _C.DATALOADER.FOCAL_RETINA.EXACT_RESUME = True

    _C.SOLVER.FOCAL_RETINA = CN()
    # "SGD": Detectron2's (the paper's) optimizer. "AdamW": with the same LR / weight-decay
    # rules; trains small models from scratch faster (configs/quickstart.yaml).
    _C.SOLVER.FOCAL_RETINA.OPTIMIZER = "SGD"
    # Write metrics (losses, lr, timings) to OUTPUT_DIR/metrics.json, the log and TensorBoard every
    # this many iterations (Detectron2's trainer: 20). 1 records every iteration's losses.
    _C.SOLVER.FOCAL_RETINA.LOG_PERIOD = 20
    # Signals that mean "preempted": the workers finish the iteration, save it, and exit with
    # status 75 (retina_plugin/engine/preemption.py). Empty: the signals' default actions.
    _C.SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS = ["SIGTERM", "SIGUSR1", "SIGUSR2"]

    _C.TEST.FOCAL_RETINA = CN()
    # Which code computes the COCO statistics inside Detectron2's COCOEvaluator (no paper
    # symbol: AP as the paper reports it, computed faster): "auto" (Detectron2's C++ evaluator
    # if built, else faster-coco-eval if installed, else pycocotools), "detectron2",
    # "faster_coco_eval" or "pycocotools" (retina_plugin/evaluation/coco_backend.py).
    _C.TEST.FOCAL_RETINA.COCO_EVAL_BACKEND = "auto"
    # After the final evaluation, draw the predictions on this many images of DATASETS.TEST[0]
    # into OUTPUT_DIR/visualizations (0: none).
    _C.TEST.FOCAL_RETINA.NUM_VIS_IMAGES = 0
    # Only boxes scoring at least this are drawn.
    _C.TEST.FOCAL_RETINA.VIS_SCORE_THRESH = 0.5
    return cfg


def load_config(config_file: str, opts=()) -> CN:
    """
    Detectron2's defaults + retina-plugin's keys, merged with `config_file` (and its ``_BASE_``
    files) and then with the KEY VALUE list `opts`.

    The files are read as plain YAML only: Detectron2's ``merge_from_file`` falls back to
    ``yaml.unsafe_load``, which runs the Python in tags such as ``!!python/object/apply``;
    here such a file is refused, naming the file and the tag, before anything in it runs.
    """
    cfg = get_cfg()
    add_retina_plugin_config(cfg)
    try:
        cfg.merge_from_file(config_file, allow_unsafe=False)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else config_file
        raise ValueError(
            f"{where}: {error.problem}. retina-plugin reads configs as plain YAML and never runs "
            "the Python a tag names; write the value out (for the paper's anchors, use "
            'MODEL.ANCHOR_GENERATOR.NAME: "OctaveAnchorGenerator").'
        ) from None
    cfg.merge_from_list(list(opts))
    return cfg
