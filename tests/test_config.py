import glob
import os

import pytest
import torch
import yaml
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY

import retina_plugin
from retina_plugin import CLASSIFICATION_LOSS_REGISTRY, RETINA_HEAD_REGISTRY, load_config
from retina_plugin.sweeps.overrides import all_keys, config_value
from tests.utils import CONFIGS_DIR, plugin_config, tiny_config

# Every YAML under configs/ is a train_net.py config (tools/ablate.py's grid files are in sweeps/).
CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIGS_DIR, "**", "*.yaml"), recursive=True))


def test_config_files_found():
    names = {os.path.relpath(f, CONFIGS_DIR) for f in CONFIG_FILES}
    assert {
        "Base-FocalRetina.yaml",
        "COCO-Detection/focal_retina_R_50_FPN_1x.yaml",
        "COCO-Detection/focal_retina_R_50_FPN_3x.yaml",
        "COCO-Detection/focal_retina_R_101_FPN_3x.yaml",
    } <= names


@pytest.mark.parametrize("config_file", CONFIG_FILES, ids=lambda f: os.path.relpath(f, CONFIGS_DIR))
def test_every_config_parses_safely_and_builds(config_file):
    with open(config_file) as f:
        assert isinstance(yaml.safe_load(f), dict)
    cfg = plugin_config(config_file)  # merge_from_file(..., allow_unsafe=False)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE


def test_paper_settings_in_base_config():
    cfg = plugin_config(os.path.join(CONFIGS_DIR, "Base-FocalRetina.yaml"))
    retina = cfg.MODEL.RETINANET
    assert cfg.MODEL.META_ARCHITECTURE == "FocalRetinaNet"
    assert (retina.FOCAL_LOSS_ALPHA, retina.FOCAL_LOSS_GAMMA, retina.PRIOR_PROB) == (
        0.25,
        2.0,
        0.01,
    )
    assert (list(retina.IOU_THRESHOLDS), list(retina.IOU_LABELS)) == ([0.4, 0.5], [0, -1, 1])
    assert retina.IN_FEATURES == ["p3", "p4", "p5", "p6", "p7"]
    assert (retina.SCORE_THRESH_TEST, retina.TOPK_CANDIDATES_TEST, retina.NMS_THRESH_TEST) == (
        0.05,
        1000,
        0.5,
    )
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER) == (0.01, 16, 90000)


def test_gpu_quickstart_is_the_quickstart_on_gpus():
    gpu = load_config(os.path.join(CONFIGS_DIR, "quickstart_gpu.yaml"))
    quickstart = load_config(os.path.join(CONFIGS_DIR, "quickstart.yaml"))
    assert (gpu.MODEL.DEVICE, gpu.MODEL.RESNETS.NORM, gpu.DATALOADER.NUM_WORKERS) == (
        "cuda",
        "SyncBN",
        4,
    )
    different = {k for k in all_keys(gpu) if config_value(gpu, k) != config_value(quickstart, k)}
    # MODEL.DEVICE is cuda in both: Detectron2's default in the quick start (the CPU where CUDA
    # is not usable), written in the GPU variant (refused there; tests/engine/test_device.py).
    assert different == {"MODEL.RESNETS.NORM", "DATALOADER.NUM_WORKERS", "OUTPUT_DIR"}


def test_every_registered_name_resolves():
    assert META_ARCH_REGISTRY.get("FocalRetinaNet") is retina_plugin.FocalRetinaNet
    assert (
        ANCHOR_GENERATOR_REGISTRY.get("OctaveAnchorGenerator")
        is retina_plugin.OctaveAnchorGenerator
    )
    assert RETINA_HEAD_REGISTRY.get("FocalRetinaHead") is retina_plugin.FocalRetinaHead
    for name in (
        "SigmoidFocalLoss",
        "SigmoidCrossEntropyLoss",
        "SigmoidFocalLossStar",
        "SoftmaxFocalLoss",
        "OHEMCrossEntropyLoss",
    ):
        assert CLASSIFICATION_LOSS_REGISTRY.get(name) is getattr(retina_plugin, name)
    for registry in (RETINA_HEAD_REGISTRY, CLASSIFICATION_LOSS_REGISTRY):
        assert "Called as" in registry.__doc__ or "called as" in registry.__doc__


@pytest.mark.parametrize("in_base", [False, True])
def test_python_tags_are_refused_and_never_run(tmp_path, in_base):
    marker = tmp_path / "ran"
    evil = f'MODEL:\n  WEIGHTS: !!python/object/apply:os.mkdir ["{marker}"]\n'
    config_file = tmp_path / "evil.yaml"
    if in_base:  # the tag hides in a _BASE_ file: that file is named
        (tmp_path / "base.yaml").write_text(evil)
        config_file.write_text('_BASE_: "base.yaml"\n')
        named = tmp_path / "base.yaml"
    else:
        config_file.write_text(evil)
        named = config_file
    with pytest.raises(ValueError) as error:
        plugin_config(str(config_file))
    assert str(error.value) == (
        f"{named}, line 2: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.mkdir'. retina-plugin reads configs as plain "
        "YAML and never runs the Python a tag names; write the value out (for the paper's "
        'anchors, use MODEL.ANCHOR_GENERATOR.NAME: "OctaveAnchorGenerator").'
    )
    assert not marker.exists()  # nothing was executed


BAD_VALUES = [
    (
        "MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS",
        [0.1, 0.2],
        "MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS = [0.1, 0.2] must hold one score threshold "
        "in [0, 1] per class, i.e. MODEL.RETINANET.NUM_CLASSES = 3 values (or be empty to use "
        "MODEL.RETINANET.SCORE_THRESH_TEST for every class).",
    ),
    (
        "MODEL.RETINANET.FOCAL_LOSS_ALPHA",
        1.5,
        "MODEL.RETINANET.FOCAL_LOSS_ALPHA = 1.5 is out of range: alpha must lie in [0, 1], or be "
        "negative (e.g. -1) to disable alpha-balancing.",
    ),
    (
        "MODEL.RETINANET.FOCAL_LOSS_GAMMA",
        -0.5,
        "MODEL.RETINANET.FOCAL_LOSS_GAMMA = -0.5 is out of range: it must be >= 0.",
    ),
    (
        "MODEL.RETINANET.IOU_THRESHOLDS",
        [0.5, 0.4],
        "MODEL.RETINANET.IOU_THRESHOLDS = [0.5, 0.4] must be non-decreasing, e.g. [0.4, 0.5].",
    ),
    (
        "MODEL.RETINANET.IOU_THRESHOLDS",
        [0.4, 1.5],
        "MODEL.RETINANET.IOU_THRESHOLDS = 1.5 is out of range: it must lie in [0.0, 1.0].",
    ),
    (
        "MODEL.RETINANET.IOU_LABELS",
        [0, 1],
        "MODEL.RETINANET.IOU_LABELS = [0, 1] must have one label per IoU band, i.e. "
        "len(MODEL.RETINANET.IOU_THRESHOLDS) + 1 = 3 labels, e.g. [0, -1, 1].",
    ),
    (
        "MODEL.RETINANET.IOU_LABELS",
        [0, 2, 1],
        "MODEL.RETINANET.IOU_LABELS = [0, 2, 1]: each label must be 0 (background), -1 (ignored) "
        "or 1 (foreground).",
    ),
    (
        "MODEL.RETINANET.PRIOR_PROB",
        1.5,
        "MODEL.RETINANET.PRIOR_PROB = 1.5 is out of range: it must lie in (0, 1).",
    ),
    (
        "MODEL.RETINANET.NUM_CLASSES",
        0,
        "MODEL.RETINANET.NUM_CLASSES = 0 is out of range: it must be >= 1.",
    ),
    (
        "MODEL.RETINANET.NMS_THRESH_TEST",
        1.2,
        "MODEL.RETINANET.NMS_THRESH_TEST = 1.2 is out of range: it must lie in [0, 1].",
    ),
    (
        "MODEL.RETINANET.BBOX_REG_LOSS_TYPE",
        "l2",
        "MODEL.RETINANET.BBOX_REG_LOSS_TYPE = 'l2' is not one of ('smooth_l1', 'giou', 'diou', 'ciou').",
    ),
    (
        "MODEL.RETINANET.IN_FEATURES",
        ["p3", "p9"],
        "MODEL.RETINANET.IN_FEATURES names ['p9'], which the backbone does not output; it outputs "
        "['p3', 'p4', 'p5', 'p6', 'p7'].",
    ),
    (
        "MODEL.FOCAL_RETINA.LOSS_NAME",
        "HingeLoss",
        "MODEL.FOCAL_RETINA.LOSS_NAME = 'HingeLoss' is not registered in CLASSIFICATION_LOSS; "
        "known: OHEMCrossEntropyLoss, SigmoidCrossEntropyLoss, SigmoidFocalLoss, "
        "SigmoidFocalLossStar, SoftmaxFocalLoss.",
    ),
    (
        "MODEL.FOCAL_RETINA.CLASS_ALPHAS",
        [0.25, 0.5],
        "MODEL.FOCAL_RETINA.CLASS_ALPHAS = [0.25, 0.5] must hold one alpha in [0, 1] per class, "
        "i.e. MODEL.RETINANET.NUM_CLASSES = 3 values (or be empty to use "
        "MODEL.RETINANET.FOCAL_LOSS_ALPHA for every class).",
    ),
    (
        "MODEL.FOCAL_RETINA.CLASS_ALPHAS",
        [0.25, 0.5, 1.5],
        "MODEL.FOCAL_RETINA.CLASS_ALPHAS = [0.25, 0.5, 1.5] must hold one alpha in [0, 1] per "
        "class, i.e. MODEL.RETINANET.NUM_CLASSES = 3 values (or be empty to use "
        "MODEL.RETINANET.FOCAL_LOSS_ALPHA for every class).",
    ),
]

# Keys of the loss family, each with the loss that reads it.
BAD_LOSS_VALUES = [
    (
        "SigmoidFocalLossStar",
        "MODEL.RETINANET.FOCAL_LOSS_GAMMA",
        0.0,
        "MODEL.RETINANET.FOCAL_LOSS_GAMMA = 0.0 is out of range for SigmoidFocalLossStar: FL* "
        "divides by gamma, so gamma must be > 0 (gamma = 1 with MODEL.FOCAL_RETINA.FL_STAR.BETA "
        "= 0 is cross entropy).",
    ),
    (
        "SigmoidFocalLossStar",
        "MODEL.FOCAL_RETINA.FL_STAR.BETA",
        float("nan"),
        "MODEL.FOCAL_RETINA.FL_STAR.BETA = nan must be a finite number.",
    ),
    (
        "SigmoidCrossEntropyLoss",
        "MODEL.RETINANET.FOCAL_LOSS_ALPHA",
        2.0,
        "MODEL.RETINANET.FOCAL_LOSS_ALPHA = 2.0 is out of range: alpha must lie in [0, 1], or be "
        "negative (e.g. -1) to disable alpha-balancing.",
    ),
    (
        "SoftmaxFocalLoss",
        "MODEL.FOCAL_RETINA.CLASS_ALPHAS",
        [0.1, 0.2, 0.3],
        "MODEL.FOCAL_RETINA.CLASS_ALPHAS is not supported by SoftmaxFocalLoss (it has one "
        "foreground alpha, MODEL.RETINANET.FOCAL_LOSS_ALPHA); set CLASS_ALPHAS to [].",
    ),
    (
        "OHEMCrossEntropyLoss",
        "MODEL.FOCAL_RETINA.OHEM.BATCH_SIZE_PER_IMAGE",
        0,
        "MODEL.FOCAL_RETINA.OHEM.BATCH_SIZE_PER_IMAGE = 0 is out of range: it must be >= 1.",
    ),
    (
        "OHEMCrossEntropyLoss",
        "MODEL.FOCAL_RETINA.OHEM.POSITIVE_FRACTION",
        1.5,
        "MODEL.FOCAL_RETINA.OHEM.POSITIVE_FRACTION = 1.5 is out of range: it must lie in (0, 1].",
    ),
    (
        "OHEMCrossEntropyLoss",
        "MODEL.FOCAL_RETINA.OHEM.NMS_THRESH",
        -0.1,
        "MODEL.FOCAL_RETINA.OHEM.NMS_THRESH = -0.1 is out of range: it must lie in [0, 1].",
    ),
]


@pytest.mark.parametrize(
    "key, value, message", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES]
)
def test_config_errors_at_build_time(key, value, message):
    cfg = tiny_config()
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError) as error:
        build_model(cfg)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "loss_name, key, value, message",
    BAD_LOSS_VALUES,
    ids=[f"{n}:{k}={v}" for n, k, v, _ in BAD_LOSS_VALUES],
)
def test_loss_config_errors_at_build_time(loss_name, key, value, message):
    cfg = tiny_config()
    cfg.merge_from_list(["MODEL.FOCAL_RETINA.LOSS_NAME", loss_name, key, value])
    with pytest.raises(ValueError) as error:
        build_model(cfg)
    assert str(error.value) == message


def test_alpha_disabled_value_accepted():
    cfg = tiny_config()
    cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA = -1.0
    model = build_model(cfg)
    assert model.classification_loss.alpha == -1.0
    logits = torch.zeros(2, 3)
    labels = torch.tensor([0, 3])
    # alpha_t = 1: the loss is 6 * 0.25 * ln 2 (six (anchor, class) pairs at p = 0.5).
    assert model.classification_loss(logits, labels).item() == pytest.approx(
        1.5 * 0.6931471805599453
    )
