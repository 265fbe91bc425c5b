"""--resume with a changed SOLVER.MAX_ITER or MODEL.RETINANET.NUM_CLASSES: a documented
continuation or an error naming the checkpoint, both values and what to do."""

import contextlib
import json
import logging
import math
import os

import pytest
import torch
from detectron2.modeling import build_model

from retina_plugin.engine import SafeCheckpointer
from tests.utils import QUICKSTART, parse, run_main, tiny_config, tiny_overrides


@pytest.fixture(autouse=True)
def propagate_logs(monkeypatch):
    # train_net's logger set-up (if a test ran it before) stops these records at its handlers.
    for name in ("retina_plugin", "fvcore"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)


def _overrides(root, max_iter, *extra):
    overrides = tiny_overrides(root / "shapes", root / "output", max_iter=max_iter)
    return overrides + [
        "DATASETS.TEST", "()", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
        "SOLVER.CHECKPOINT_PERIOD", "100", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 3-iteration run: OUTPUT_DIR holds model_final.pth (iteration 2) only."""
    root = tmp_path_factory.mktemp("resume")
    run_main(parse("--config-file", QUICKSTART, *_overrides(root, 3)))
    return root


@contextlib.contextmanager
def listening(caplog, logger_name):
    """caplog gets the records of `logger_name` once, whether or not main() set its parent
    "retina_plugin" logger up without propagation (Detectron2 does that once per process)."""
    logger = logging.getLogger(logger_name)
    logger.addHandler(caplog.handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = True


def test_resume_past_max_iter_stops(finished_run):
    root = finished_run
    final = root / "output" / "model_final.pth"
    args = parse("--resume", "--config-file", QUICKSTART, *_overrides(root, 2))
    with pytest.raises(ValueError) as error:
        run_main(args)
    assert str(error.value) == (
        f"--resume: {final} has already trained 3 iterations, more than SOLVER.MAX_ITER = 2, so "
        "it is not the model this config describes. To train longer, set SOLVER.MAX_ITER above "
        f"3; to evaluate the checkpoint, run with --eval-only MODEL.WEIGHTS {final}."
    )


def test_resume_of_a_finished_run_only_evaluates(finished_run, caplog):
    root = finished_run
    final = root / "output" / "model_final.pth"
    saved = final.read_bytes()
    overrides = _overrides(root, 3) + ["DATASETS.TEST", "('shapes_val',)"]
    with listening(caplog, "retina_plugin.engine.resume"):
        results = run_main(parse("--resume", "--config-file", QUICKSTART, *overrides))
    assert [r.getMessage() for r in caplog.records if r.name.endswith(".resume")] == [
        f"--resume: {final} has trained all 3 iterations of SOLVER.MAX_ITER = 3: nothing is left "
        "to train, only the final evaluation runs. To train longer, set SOLVER.MAX_ITER above 3."
    ]
    assert "AP" in results["bbox"]  # e.g. a run stopped during its final evaluation
    assert final.read_bytes() == saved


def test_resume_with_larger_max_iter_continues_and_warns(finished_run, tmp_path, caplog):
    root = tmp_path
    output = root / "output"
    output.mkdir()
    for name in ("model_final.pth", "last_checkpoint"):
        (output / name).write_bytes((finished_run / "output" / name).read_bytes())
    os.symlink(finished_run / "shapes", root / "shapes")
    args = parse("--resume", "--config-file", QUICKSTART, *_overrides(root, 5))
    with listening(caplog, "retina_plugin.engine.lr_scheduler"):
        run_main(args)
    # WarmupCosineLR over 5 iterations, 2 of warm-up: at iteration 3, (1 + cos(pi 3/5)) / 2.
    multiplier = (1 + math.cos(math.pi * 3 / 5)) / 2
    assert f"{multiplier:.4g}" == "0.3455"
    assert [r.getMessage() for r in caplog.records if r.name.endswith("lr_scheduler")] == [
        "Resuming at iteration 3 with SOLVER.MAX_ITER = 5; the checkpoint's run had 3. The LR "
        "schedule is now the one for 5 iterations, at 0.3455 x BASE_LR here (WarmupMultiStepLR "
        "keeps its SOLVER.STEPS; WarmupCosineLR is stretched to the new length, so its LR jumps)."
    ]
    final = torch.load(output / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 4
    assert final["trainer"]["hooks"]["LRScheduler"] == {
        "base_lrs": final["trainer"]["hooks"]["LRScheduler"]["base_lrs"],
        "last_epoch": 5,
        "max_iter": 5,
    }
    with open(output / "metrics.json") as f:
        iterations = [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]
    assert iterations[-1] == 4


def _three_class_dataset(shapes_dir, json_file):
    """shapes_val reduced to its first 3 categories (and the annotations of those)."""
    with open(shapes_dir / "annotations.json") as f:
        data = json.load(f)
    keep = {c["id"] for c in data["categories"][:3]}
    data["categories"] = [c for c in data["categories"] if c["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep]
    with open(json_file, "w") as f:
        json.dump(data, f)


def test_resume_with_other_num_classes_stops(finished_run, tmp_path):
    root = finished_run
    shapes_dir = next(p for p in (root / "shapes").iterdir() if p.name.startswith("shapes_val"))
    json_file = tmp_path / "three.json"
    _three_class_dataset(shapes_dir, json_file)
    dataset = f"[['three', '{json_file}', '{shapes_dir / 'images'}']]"
    overrides = _overrides(root, 6, "MODEL.RETINANET.NUM_CLASSES", "3")
    overrides += ["DATASETS.FOCAL_RETINA.COCO", dataset, "DATASETS.TRAIN", "('three',)"]
    final = root / "output" / "model_final.pth"
    with pytest.raises(ValueError) as error:
        run_main(parse("--resume", "--config-file", QUICKSTART, *overrides))
    # The quickstart's head: 9 anchors per location, 64 channels.
    assert str(error.value) == (
        f"--resume: {final} holds a model for 8 classes (head.cls_score.weight has shape "
        "(72, 64, 3, 3)), but MODEL.RETINANET.NUM_CLASSES = 3 (shape (27, 64, 3, 3)). A resumed "
        "run continues the model it saved; to train for 3 classes, use a fresh OUTPUT_DIR, or "
        f"fine-tune from this checkpoint without --resume: MODEL.WEIGHTS {final} (parameters "
        "whose shapes differ are then skipped, with a warning, and start from their "
        "initialisation)."
    )


def _tiny_model(num_classes=3, fpn_channels=32):
    cfg = tiny_config()
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.FPN.OUT_CHANNELS = fpn_channels
    torch.manual_seed(0)
    return build_model(cfg)


def test_fine_tuning_from_another_num_classes_skips_the_class_layer(tmp_path, caplog):
    SafeCheckpointer(_tiny_model(num_classes=3), save_dir=str(tmp_path)).save("model_0000009")
    model = _tiny_model(num_classes=5)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = str(tmp_path / "model_0000009.pth")
    with caplog.at_level(logging.WARNING):
        SafeCheckpointer(model).resume_or_load(checkpoint, resume=False)
    skipped = [r.getMessage() for r in caplog.records if "Skip loading" in r.getMessage()]
    assert skipped == [
        "Skip loading parameter 'head.cls_score.weight' to the model due to incompatible shapes: "
        "(27, 32, 3, 3) in the checkpoint but (45, 32, 3, 3) in the model! You might want to "
        "double check if this is expected.",
        "Skip loading parameter 'head.cls_score.bias' to the model due to incompatible shapes: "
        "(27,) in the checkpoint but (45,) in the model! You might want to double check if this "
        "is expected.",
    ]
    saved = torch.load(checkpoint, weights_only=True)["model"]
    for key, value in model.state_dict().items():
        expected = initial[key] if key.startswith("head.cls_score.") else saved[key]
        assert torch.equal(value, expected), key
    # The class layer keeps the paper's prior initialisation: bias -log((1 - pi) / pi).
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(model.head.cls_score.bias, torch.full((45,), prior))


def test_resume_into_other_shapes_names_them(tmp_path):
    SafeCheckpointer(_tiny_model(fpn_channels=32), save_dir=str(tmp_path)).save("model_0000009")
    model = _tiny_model(fpn_channels=16)
    with pytest.raises(ValueError) as error:
        SafeCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    message = str(error.value)
    assert message.startswith(
        f"--resume: {tmp_path / 'model_0000009.pth'} holds parameters of other shapes than this "
        "config's model (backbone.fpn_lateral3.weight (32, 128, 1, 1) -> (16, 128, 1, 1), "
    )
    assert (
        "more). A resumed run continues the model it saved, so it needs the config that run "
        in (message)
    )
