"""A full disk, as train_net.py meets it: a real file-size limit (RLIMIT_FSIZE, set in the
process before train_net.py starts; the kernel then fails writes past it with EFBIG, as a full
disk fails them with ENOSPC) stops the run at the first file it cannot write, naming the file and
the OS error; nothing half-written is left, and --resume continues once there is room."""

import glob
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys

import torch

from tests.utils import QUICKSTART, REPO_ROOT, tiny_overrides

_ADVICE = (
    "Free space on that disk (or raise the quota or file-size limit), then run the same command "
    "with --resume to continue."
)


def _train_net(*args, file_size_limit=None):
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_file_size if file_size_limit else None,
    )


def _copy_run(tiny_trained, destination):
    """A copy of the shared tiny training's folder (model_final.pth after 4 iterations)."""
    root, _, _ = tiny_trained
    shutil.copytree(
        root / "train", destination, ignore=shutil.ignore_patterns("inference", "visualizations")
    )
    return root


def _sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def test_checkpoint_on_a_full_disk_then_resume(tiny_trained, tmp_path):
    run = tmp_path / "run"
    root = _copy_run(tiny_trained, run)
    final_sha1 = _sha1(run / "model_final.pth")
    assert (run / "last_checkpoint").read_text() == "model_final.pth"
    overrides = tiny_overrides(root / "shapes", run, max_iter=6) + [
        "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()",
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
    ]  # fmt: skip
    args = ["--resume", "--config-file", QUICKSTART, *overrides]
    # The checkpoint (~130 MB with AdamW's moments) cannot be written; log, config and metrics can.
    full = _train_net(*args, file_size_limit=4 << 20)
    assert full.returncode == 1, full.stderr[-3000:]
    assert full.stderr.strip().splitlines()[-1] == (
        "retina_plugin.engine.output_files.OutputWriteError: Could not write "
        f"{run}/model_0000005.pth: [Errno 27] File too large. last_checkpoint still names the "
        f"previous complete checkpoint; no partial file was left. {_ADVICE}"
    )
    assert (run / "last_checkpoint").read_text() == "model_final.pth"
    assert _sha1(run / "model_final.pth") == final_sha1
    assert not glob.glob(str(run / "*.tmp-*")) and not (run / "model_0000005.pth").exists()
    # Room again: --resume continues from the last complete checkpoint (and saves 5 and final).
    done = _train_net(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting training from iteration 4" in done.stdout + done.stderr
    final = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 5
    assert (run / "last_checkpoint").read_text() == "model_final.pth"


def test_metrics_on_a_full_disk(tiny_trained, tmp_path):
    run = tmp_path / "run"
    root = _copy_run(tiny_trained, run)
    limit = 1 << 20
    # metrics.json a few bytes short of the limit: the next line does not fit.
    with open(run / "metrics.json", "a") as f:
        padding = limit - 10 - os.path.getsize(run / "metrics.json") - len('{"padding": ""}\n')
        f.write(json.dumps({"padding": "x" * padding}) + "\n")
    metrics = (run / "metrics.json").read_bytes()
    overrides = tiny_overrides(root / "shapes", run, max_iter=6) + [
        "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.FOCAL_RETINA.LOG_PERIOD", "1",
        "DATASETS.TEST", "()", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
    ]  # fmt: skip
    full = _train_net("--resume", "--config-file", QUICKSTART, *overrides, file_size_limit=limit)
    assert full.returncode == 1, full.stderr[-3000:]
    assert full.stderr.strip().splitlines()[-1] == (
        "retina_plugin.engine.output_files.OutputWriteError: Could not write "
        f"{run}/metrics.json: [Errno 27] File too large. metrics.json keeps every complete line "
        f"written before. {_ADVICE}"
    )
    assert "iter: 4 " in full.stdout + full.stderr  # stopped at the first write, iteration 4
    assert (run / "metrics.json").read_bytes() == metrics
    assert (run / "last_checkpoint").read_text() == "model_final.pth"


_WRITE_RESULTS = """
import resource, sys
from tests.utils import QUICKSTART, plugin_config
from retina_plugin.engine.results import write_final_results
cfg = plugin_config(QUICKSTART)
cfg.OUTPUT_DIR, cfg.TEST.FOCAL_RETINA.NUM_VIS_IMAGES = sys.argv[1], 0
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
write_final_results(cfg, None, {"bbox": {"AP": 12.5, "AP50": 30.0, "AP75": 10.0}})
"""


def test_final_results_on_a_full_disk(tmp_path):
    """final_results.json (written after training and by --eval-only) under a 64-byte limit: the
    previous file stays as it was. (A file this small is the last a run writes: train_net.py
    cannot reach it under a size limit that lets config.yaml through.)"""
    (tmp_path / "final_results.json").write_text('{"bbox": {"AP": 1.0}}')
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_RESULTS, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "retina_plugin.engine.output_files.OutputWriteError: Could not write "
        f"{tmp_path}/final_results.json: [Errno 27] File too large. The checkpoints are complete: "
        f"--resume evaluates the last one again. {_ADVICE}"
    )
    assert os.listdir(tmp_path) == ["final_results.json"]
    assert (tmp_path / "final_results.json").read_text() == '{"bbox": {"AP": 1.0}}'
