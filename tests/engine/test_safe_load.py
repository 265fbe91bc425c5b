"""Checkpoints are read as weights only: our own load with torch.load(weights_only=True), model-zoo
.pkl weights load through a restricted unpickler, and a file that needs more is refused, naming
the file and the Python global, before any of its code runs."""

import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from retina_plugin.demo import run_demo
from retina_plugin.engine import SafeCheckpointer, UnsafeCheckpointError
from tests.utils import QUICKSTART, parse, run_main, tiny_config, tiny_overrides

REFUSED = (
    "refused, since unpickling it would run code that the file chooses. Weights need only "
    "tensors (numpy arrays in a .pkl): if you trust this file, re-save its weights as plain "
    "tensors, e.g. torch.save({'model': state_dict}, 'weights.pth'), and load that."
)


class CreatesFileWhenUnpickled:
    """Unpickling this calls open(path, "w"): proof that the file's code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class PlainObject:
    """An instance of an arbitrary class: unpickling it imports and builds that class."""


def _tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_config())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two SGD + AMP iterations of 2 images, a checkpoint after each."""
    root = tmp_path_factory.mktemp("safe_load")
    overrides = tiny_overrides(root / "shapes", root / "output", max_iter=2) + [
        "SOLVER.FOCAL_RETINA.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.001",
        # bfloat16 at 64 px: P7's weight gradient is the one retina_plugin/modeling/autocast.py keeps in
        # float32 (it was garbage, and the second step's loss NaN, depending on earlier tests).
        "SOLVER.AMP.ENABLED", "True", "SOLVER.CHECKPOINT_PERIOD", "1",
        "DATASETS.TEST", "()", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
    ]  # fmt: skip
    run_main(parse("--config-file", QUICKSTART, *overrides))
    return root


def test_our_checkpoints_load_weights_only(trained):
    output = trained / "output"
    names = ["model_0000000.pth", "model_0000001.pth", "model_final.pth"]
    assert sorted(p.name for p in output.glob("*.pth")) == names
    for path in output.glob("*.pth"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert set(checkpoint) == {"model", "trainer", "iteration"}
        trainer = checkpoint["trainer"]
        assert trainer["iteration"] == checkpoint["iteration"]
        assert set(trainer["hooks"]) == {"LRScheduler"}
        assert set(trainer["hooks"]["LRScheduler"]) == {"base_lrs", "last_epoch", "max_iter"}
        # SGD's momentum buffers; no gradient scaler (bfloat16 needs none: SimpleTrainer's step).
        assert set(trainer["_trainer"]) == {"iteration", "optimizer"}
        state = trainer["_trainer"]["optimizer"]["state"]
        assert state and all("momentum_buffer" in s for s in state.values())
    final = torch.load(output / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 1 and final["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 2


def _evil_checkpoint(path, payload):
    torch.save({"model": _tiny_model().state_dict(), "iteration": 9, "payload": payload}, path)


@pytest.mark.parametrize(
    "payload, global_name",
    [
        (CreatesFileWhenUnpickled, "io.open"),
        (lambda marker: PlainObject(), f"{__name__}.PlainObject"),
    ],
)
def test_pth_needing_unpickling_is_refused(tmp_path, payload, global_name):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "model_0000009.pth"
    _evil_checkpoint(checkpoint, payload(marker))
    with pytest.raises(UnsafeCheckpointError) as error:
        SafeCheckpointer(_tiny_model(), save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert (
        str(error.value) == f"{checkpoint}: it names the Python global '{global_name}'; {REFUSED}"
    )
    assert not marker.exists()


def test_the_payload_is_live(tmp_path):
    """The file above does run code when unpickled freely: the refusal is what prevents it."""
    marker = tmp_path / "code_ran"
    _evil_checkpoint(tmp_path / "evil.pth", CreatesFileWhenUnpickled(marker))
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


def _entry_point_args(root, weights, entry_point):
    overrides = tiny_overrides(root / "shapes", root / "out", max_iter=2)
    if entry_point == "eval-only":
        return parse(
            "--config-file", QUICKSTART, "--eval-only", *overrides, "MODEL.WEIGHTS", weights
        )
    return parse("--config-file", QUICKSTART, *overrides, "MODEL.WEIGHTS", weights)


@pytest.mark.parametrize("entry_point", ["train", "eval-only", "demo"])
def test_every_entry_point_refuses(trained, tmp_path, entry_point):
    marker = tmp_path / "code_ran"
    weights = tmp_path / "evil.pth"
    _evil_checkpoint(weights, CreatesFileWhenUnpickled(marker))
    with pytest.raises(UnsafeCheckpointError) as error:
        if entry_point == "demo":
            (tmp_path / "in.png").write_bytes(b"")
            run_demo(
                QUICKSTART,
                [str(tmp_path / "in.png")],
                str(tmp_path / "out"),
                opts=["MODEL.WEIGHTS", str(weights)],
            )
        else:
            run_main(_entry_point_args(trained, str(weights), entry_point))
    assert str(error.value) == f"{weights}: it names the Python global 'io.open'; {REFUSED}"
    assert not marker.exists()


def _detectron2_pkl(path, state_dict, numpy1_names=False):
    """Weights in Detectron2's model-zoo .pkl format: numpy arrays, pickle protocol 2."""
    data = {
        "model": {k: v.numpy() for k, v in state_dict.items()},
        "__author__": "retina-plugin tests",
        "iteration": np.int64(7),
    }
    raw = pickle.dumps(data, protocol=2)
    if numpy1_names:  # as written by numpy 1 (and Python 2), which model-zoo files were
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


@pytest.mark.parametrize("numpy1_names", [False, True])
def test_detectron2_pkl_loads_into_a_model(tmp_path, numpy1_names):
    source = _tiny_model()
    path = tmp_path / "weights.pkl"
    _detectron2_pkl(path, source.state_dict(), numpy1_names)
    torch.manual_seed(1)
    model = build_model(tiny_config())
    assert not torch.equal(model.head.cls_score.weight, source.head.cls_score.weight)
    extra = SafeCheckpointer(model).load(str(path))
    assert extra["iteration"] == 7
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pkl_with_other_globals_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "weights.pkl"
    data = {"model": {}, "__author__": "someone", "x": CreatesFileWhenUnpickled(marker)}
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(UnsafeCheckpointError) as error:
        SafeCheckpointer(_tiny_model()).load(str(path))
    assert str(error.value) == f"{path}: it names the Python global 'io.open'; {REFUSED}"
    assert not marker.exists()
    assert os.listdir(tmp_path) == ["weights.pkl"]


def test_refused_even_where_torch_load_defaults_to_unsafe(tmp_path, monkeypatch):
    """fvcore calls torch.load without weights_only, which this variable turns unsafe; we pass
    weights_only=True ourselves."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "evil.pth"
    _evil_checkpoint(checkpoint, CreatesFileWhenUnpickled(marker))
    with pytest.raises(UnsafeCheckpointError):
        SafeCheckpointer(_tiny_model()).load(str(checkpoint))
    assert not marker.exists()


def test_pycls_pyth_is_read_weights_only(tmp_path):
    source = _tiny_model()
    good, evil = tmp_path / "good.pyth", tmp_path / "evil.pyth"
    torch.save({"model_state": source.state_dict()}, good)
    marker = tmp_path / "code_ran"
    torch.save({"model_state": {}, "x": CreatesFileWhenUnpickled(marker)}, evil)
    model = _tiny_model()
    with torch.no_grad():
        model.head.cls_score.weight.zero_()
    SafeCheckpointer(model).load(str(good))
    assert torch.equal(model.head.cls_score.weight, source.head.cls_score.weight)
    with pytest.raises(UnsafeCheckpointError) as error:
        SafeCheckpointer(model).load(str(evil))
    assert str(error.value) == f"{evil}: it names the Python global 'io.open'; {REFUSED}"
    assert not marker.exists()


def _caffe2_pkl(path, state_dict):
    """Weights as a Detectron1 / Caffe2 model-zoo .pkl: {"blobs": ...} with momentum blobs."""
    blobs = {k: v.numpy() for k, v in state_dict.items()}
    blobs.update({f"{k}_momentum": v for k, v in list(blobs.items())[:3]})
    path.write_bytes(pickle.dumps({"blobs": blobs, "cfg": "a Detectron1 config"}, protocol=2))


@pytest.mark.parametrize("kind", ["detectron2.pkl", "caffe2.pkl", "pycls.pyth"])
def test_files_read_as_detectron2_reads_them(tmp_path, kind):
    """Benign model-zoo files: SafeCheckpointer returns what Detectron2's own _load_file does."""
    state_dict = _tiny_model().state_dict()
    path = tmp_path / f"weights.{kind.split('.')[1]}"
    if kind == "detectron2.pkl":
        _detectron2_pkl(path, state_dict)
    elif kind == "caffe2.pkl":
        _caffe2_pkl(path, state_dict)
    else:
        torch.save({"model_state": state_dict}, path)
    ours = SafeCheckpointer(_tiny_model())._load_file(str(path))
    theirs = DetectionCheckpointer(_tiny_model())._load_file(str(path))
    assert set(ours) == set(theirs) and set(ours["model"]) == set(theirs["model"])
    for key, value in theirs["model"].items():
        assert np.array_equal(np.asarray(ours["model"][key]), np.asarray(value)), key
    assert {k: v for k, v in ours.items() if k != "model"} == {
        k: v for k, v in theirs.items() if k != "model"
    }
