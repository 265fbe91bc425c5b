"""train_net.py end to end on tiny shapes data: train + COCO evaluation, eval-only, the NUM_CLASSES
check, custom datasets from the config, 2 CPU processes, kill-and-resume, and tools/demo.py on the
trained model."""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from detectron2.data import DatasetCatalog

from tests.utils import QUICKSTART, REPO_ROOT, parse, run_main, tiny_overrides


@pytest.fixture(scope="module")
def trained(tiny_trained):
    """One short training run through main() (tests/conftest.py), shared by the tests below."""
    root, _, results = tiny_trained
    return root, root / "train", results


def test_train_and_evaluate(trained):
    _, output_dir, results = trained
    bbox = results["bbox"]  # Detectron2 returns one dataset's results unnested
    assert {"AP", "AP50", "AP75", "APs", "APm"} <= set(bbox)
    assert 0 <= bbox["AP"] <= 100
    with open(output_dir / "final_results.json") as f:
        assert json.load(f)["bbox"]["AP"] == bbox["AP"]
    assert (output_dir / "model_final.pth").is_file()
    assert (output_dir / "inference" / "shapes_val" / "coco_instances_results.json").is_file()
    assert sorted(os.listdir(output_dir / "visualizations")) == ["000000.png", "000001.png"]
    checkpoint = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 3


def test_eval_only_reproduces_final_evaluation(trained, tmp_path):
    root, output_dir, results = trained
    args = parse(
        "--config-file", QUICKSTART, "--eval-only",
        *tiny_overrides(root / "shapes", tmp_path / "eval"),
        "MODEL.WEIGHTS", str(output_dir / "model_final.pth"),
    )  # fmt: skip
    # Same numbers (APl is NaN: no large objects in 64 px images).
    assert run_main(args)["bbox"] == pytest.approx(results["bbox"], nan_ok=True, rel=0, abs=0)


def test_num_classes_mismatch(trained):
    root, _, _ = trained
    overrides = tiny_overrides(root / "shapes", root / "mismatch")
    args = parse("--config-file", QUICKSTART, *overrides, "MODEL.RETINANET.NUM_CLASSES", "3")
    with pytest.raises(ValueError) as error:
        run_main(args)
    message = str(error.value)
    assert message.startswith("MODEL.RETINANET.NUM_CLASSES = 3, but dataset 'shapes_train' (")
    assert message.endswith(
        "annotations.json) has 8 categories. Set MODEL.RETINANET.NUM_CLASSES 8."
    )


def test_custom_coco_dataset_from_config(trained, tmp_path):
    root, _, _ = trained
    shapes_dir = next(p for p in (root / "shapes").iterdir() if p.name.startswith("shapes_val"))
    json_file, image_root = str(shapes_dir / "annotations.json"), str(shapes_dir / "images")
    overrides = tiny_overrides(root / "shapes", tmp_path / "custom", max_iter=1)
    overrides += [
        "DATASETS.FOCAL_RETINA.COCO", f"[['my_train', '{json_file}', '{image_root}']]",
        "DATASETS.TRAIN", "('my_train',)", "DATASETS.TEST", "()",
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
    ]  # fmt: skip
    run_main(parse("--config-file", QUICKSTART, *overrides))
    records = DatasetCatalog.get("my_train")
    assert len(records) == 8
    assert (tmp_path / "custom" / "model_final.pth").is_file()


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "[['my_data', 'missing.json', '.']]",
            "DATASETS.FOCAL_RETINA.COCO: the json file 'missing.json' of dataset 'my_data' does not exist.",
        ),
        (
            "[['my_data', 'x.json']]",
            "DATASETS.FOCAL_RETINA.COCO entry ['my_data', 'x.json'] must be a [name, json_file, "
            'image_root] triple of strings, e.g. ["my_train", "train.json", "images/"].',
        ),
    ],
)
def test_bad_custom_dataset_entry(tmp_path, entry, message):
    args = parse(
        "--config-file", QUICKSTART, "DATASETS.FOCAL_RETINA.COCO", entry,
        "DATASETS.TRAIN", "('my_data',)", "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        run_main(args)
    assert str(error.value) == message


def _run_train_net(*argv, timeout=600):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _iterations_logged(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]


def test_two_cpu_processes(trained, tmp_path):
    root, _, _ = trained
    output_dir = tmp_path / "ddp"
    overrides = tiny_overrides(root / "shapes", output_dir, max_iter=3)
    overrides += ["MODEL.FOCAL_RETINA.LOSS_NORMALIZER.SYNC_ACROSS_WORKERS", "True"]
    overrides += ["SOLVER.IMS_PER_BATCH", "4", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0"]
    done = _run_train_net(
        "--num-gpus", "2", "--dist-url", "auto", "--config-file", QUICKSTART, *overrides
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Rank of current process: 0. World size: 2" in log
    # MODEL.DEVICE cpu (tiny_overrides): the workers meet with gloo, also on a machine with GPUs,
    # where Detectron2's launch would pick NCCL; the sync normaliser's all-reduce runs there.
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"Worker 0 of 2; on this machine 0 of 2; {threads} torch threads; cpu, gloo" in log
    assert _iterations_logged(output_dir)[-1] == 2
    with open(output_dir / "final_results.json") as f:
        assert "AP" in json.load(f)["bbox"]


def test_resume_after_kill(trained, tmp_path):
    root, _, _ = trained
    output_dir = tmp_path / "resume"
    overrides = tiny_overrides(root / "shapes", output_dir, max_iter=400)
    overrides += ["SOLVER.CHECKPOINT_PERIOD", "3", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0"]
    command = [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", QUICKSTART]
    process = subprocess.Popen(
        command + overrides, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Kill it (mid-run, no clean-up) once it has completed the checkpoint after iteration 5.
    last_checkpoint = output_dir / "last_checkpoint"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if last_checkpoint.exists() and last_checkpoint.read_text().strip() >= "model_0000005.pth":
            break
        time.sleep(0.1)
    # A second run on the folder (a second terminal, a resubmitted job) is refused before it
    # writes anything, naming the first; the first run goes on.
    config_yaml = (output_dir / "config.yaml").read_bytes()
    second = _run_train_net("--resume", "--config-file", QUICKSTART, *overrides)
    assert second.returncode == 1, second.stderr[-3000:]
    message = (
        rf"retina_plugin\.engine\.output_lock\.OutputDirInUse: OUTPUT_DIR "
        rf"{re.escape(os.path.realpath(output_dir))} is in use by another run \(pid {process.pid} "
        rf"on {re.escape(socket.gethostname())}, started \S+: \S+ \S+train_net\.py "
        rf"--config-file \S+quickstart\.yaml .*\): two runs would overwrite each other's "
        r"checkpoints and results\. Wait for it to end or stop it \(then --resume continues "
        r"from its last checkpoint\), or choose another OUTPUT_DIR\."
    )
    assert re.fullmatch(message, second.stderr.strip().splitlines()[-1]), second.stderr[-2000:]
    assert (output_dir / "config.yaml").read_bytes() == config_yaml
    assert process.poll() is None
    # Killed (no clean-up): its lock goes with it, and --resume works at once.
    process.send_signal(signal.SIGKILL)
    process.wait()
    last = last_checkpoint.read_text().strip()
    saved_iteration = int(last.split("_")[1].split(".")[0])
    assert saved_iteration >= 5 and saved_iteration % 3 == 2

    resumed_max_iter = saved_iteration + 3
    overrides = tiny_overrides(root / "shapes", output_dir, max_iter=resumed_max_iter)
    overrides += ["SOLVER.CHECKPOINT_PERIOD", "3", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0"]
    done = _run_train_net("--resume", "--config-file", QUICKSTART, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Starting training from iteration {saved_iteration + 1}" in done.stdout + done.stderr
    saved = torch.load(output_dir / last, map_location="cpu", weights_only=False)
    final = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == resumed_max_iter - 1
    # The LR schedule and the optimizer state were restored and carried on from the checkpoint.
    schedule = [c["trainer"]["hooks"]["LRScheduler"]["last_epoch"] for c in (saved, final)]
    assert schedule == [saved_iteration + 1, resumed_max_iter]
    moments = [
        c["trainer"]["_trainer"]["optimizer"]["state"][0]["step"].item() for c in (saved, final)
    ]
    assert moments == [saved_iteration + 1, resumed_max_iter]  # AdamW's step count


def test_demo_on_generated_images(trained, tmp_path):
    """tools/demo.py as a user runs it: a folder with two images and one unreadable file."""
    root, output_dir, _ = trained
    shapes_dir = next(p for p in (root / "shapes").iterdir() if p.name.startswith("shapes_val"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("000000.png", "000001.png"):
        (inputs / name).write_bytes((shapes_dir / "images" / name).read_bytes())
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    done = subprocess.run(
        [
            sys.executable, "tools/demo.py",
            "--config-file", QUICKSTART, "--input", str(inputs), "--output", str(tmp_path / "out"),
            "--score-thresh", "0.0",
            "--opts", "MODEL.WEIGHTS", str(output_dir / "model_final.pth"),
            *tiny_overrides(root / "shapes", tmp_path / "unused")[:8],
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-3000:]  # one unreadable file
    assert sorted(os.listdir(tmp_path / "out")) == ["000000.png", "000001.png", "detections.json"]
    with open(tmp_path / "out" / "detections.json") as f:
        detections = json.load(f)
    # A threshold of 0 keeps up to TEST.DETECTIONS_PER_IMAGE = 100 boxes per image (NMS may
    # leave fewer).
    per_image = collections.Counter(d["file_name"] for d in detections)
    assert set(per_image) == {str(inputs / "000000.png"), str(inputs / "000001.png")}
    assert all(50 < count <= 100 for count in per_image.values())
    assert {d["category_id"] for d in detections} <= set(range(1, 9))  # the json's category ids
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 for d in detections)
    for name in ("000000.png", "000001.png"):
        assert f"{inputs / name}: {per_image[str(inputs / name)]} detections" in log
    broken = str(inputs / "broken.png")
    assert f"Cannot read image {broken!r}: PIL does not recognise it as an image" in log
    # One message per bad file, and a summary naming the files skipped.
    (message,) = [line for line in log.splitlines() if "Cannot read" in line]
    assert message.count("Cannot read image") == 1 and message.endswith(" Skipped.")
    assert f"1 image(s) could not be read: [{broken!r}]" in log


def test_non_finite_loss_stops_before_the_step_and_resume_works(trained, tmp_path, monkeypatch):
    from retina_plugin.losses import SigmoidFocalLoss

    root, _, _ = trained
    output_dir = tmp_path / "nan"
    overrides = tiny_overrides(root / "shapes", output_dir, max_iter=6)
    overrides += ["SOLVER.CHECKPOINT_PERIOD", "2", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0"]
    calls = []
    real_forward = SigmoidFocalLoss.forward

    def nan_at_iteration_3(self, pred_logits, gt_labels, anchors):
        calls.append(1)
        loss = real_forward(self, pred_logits, gt_labels, anchors)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(SigmoidFocalLoss, "forward", nan_at_iteration_3)
    with pytest.raises(FloatingPointError) as error:
        run_main(parse("--config-file", QUICKSTART, *overrides))
    message = str(error.value)
    assert message.startswith("Loss became infinite or NaN at iteration=3!")
    # Each term is named; numpy >= 2 prints its floats as np.float64(...).
    assert re.search(r"'loss_cls': (np\.float64\()?nan", message)
    assert "'loss_box_reg': " in message
    # The optimizer never stepped on it: the checkpoint after iteration 1 is finite and the
    # run resumes from it.
    assert sorted(p.name for p in output_dir.glob("model_*.pth")) == ["model_0000001.pth"]
    saved = torch.load(output_dir / "model_0000001.pth", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    monkeypatch.setattr(SigmoidFocalLoss, "forward", real_forward)
    run_main(parse("--resume", "--config-file", QUICKSTART, *overrides))
    final = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 5


def test_custom_dataset_missing_image_folder(tmp_path):
    json_file = tmp_path / "train.json"
    json_file.write_text('{"images": [], "annotations": [], "categories": []}')
    entry = f"[['my_data', '{json_file}', '{tmp_path / 'no_images'}']]"
    args = parse(
        "--config-file", QUICKSTART, "DATASETS.FOCAL_RETINA.COCO", entry,
        "DATASETS.TRAIN", "('my_data',)", "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    with pytest.raises(FileNotFoundError) as error:
        run_main(args)
    assert str(error.value) == (
        f"DATASETS.FOCAL_RETINA.COCO: the image folder {str(tmp_path / 'no_images')!r} of dataset "
        "'my_data' does not exist."
    )
