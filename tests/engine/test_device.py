"""The device of a run (retina_plugin/engine/device.py): GPUs asked for where CUDA is not usable
are refused through train_net.py, with the reason; the quick start's default device falls back
to the CPU for one process; CPU workers meet with gloo; the threads of workers sharing a machine.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from detectron2.utils import comm

from retina_plugin.engine import launch
from retina_plugin.engine.device import (
    check_gpus_per_machine,
    describe_cuda_state,
    device_written_in,
    nvidia_driver_version,
    process_group_backend,
    resolve_device,
)
from retina_plugin.engine.setup import threads_per_worker
from tests.utils import (
    CONFIGS_DIR,
    QUICKSTART,
    REPO_ROOT,
    environment_without_gpus,
    parse,
    tiny_shapes_overrides,
)

GPU_QUICKSTART = os.path.join("configs", "quickstart_gpu.yaml")  # as a user types it


def test_process_group_backend():
    """NCCL has no CPU collectives: CPU models meet with gloo, whatever GPUs there are."""
    assert [process_group_backend(d) for d in ("cpu", "cuda", "cuda:1")] == ["gloo", "nccl", "nccl"]


def test_device_written_in(tmp_path):
    assert device_written_in(QUICKSTART) is None  # Detectron2's default
    assert device_written_in(QUICKSTART, ["MODEL.DEVICE", "cpu"]) == "on the command line"
    # A value equal to a key is not a key.
    assert device_written_in(QUICKSTART, ["OUTPUT_DIR", "MODEL.DEVICE"]) is None
    gpu = os.path.join(CONFIGS_DIR, "quickstart_gpu.yaml")
    assert device_written_in(gpu) == f"in {gpu}"
    # Set in a _BASE_ file (relative to the file naming it), two files up the chain.
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(f"_BASE_: {gpu}\nSOLVER:\n  MAX_ITER: 3\n")
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nMODEL:\n  WEIGHTS: ''\n")
    assert device_written_in(str(tmp_path / "sub" / "child.yaml")) == f"in {gpu}"
    (tmp_path / "sub" / "cpu.yaml").write_text("_BASE_: ../base.yaml\nMODEL:\n  DEVICE: cpu\n")
    assert device_written_in(str(tmp_path / "sub" / "cpu.yaml")) == f"in {tmp_path}/sub/cpu.yaml"


def test_resolve_device_without_refusal():
    # A device the machine has, or the CPU asked for, is used as it is.
    assert resolve_device("cpu", None, 2, "--num-gpus 2") == "cpu"
    assert resolve_device("cpu", "on the command line", 8, "--num-gpus 8") == "cpu"
    # The quick start on one process: the GPU where there is one, the CPU otherwise.
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("cuda", None, 1, "--num-gpus 1") == expected


def test_describe_cuda_state():
    assert describe_cuda_state("2.14.1+cu130", "13.0", None, None) == (
        "torch.cuda.is_available() is False; torch 2.14.1+cu130 is built for CUDA 13.0; no "
        "NVIDIA driver found (/proc/driver/nvidia/version does not exist)"
    )
    assert describe_cuda_state("2.14.1+cu130", "13.0", "535.104.05", "") == (
        "torch.cuda.is_available() is False; torch 2.14.1+cu130 is built for CUDA 13.0; NVIDIA "
        "driver 535.104.05; CUDA_VISIBLE_DEVICES is '' (no GPU visible)"
    )
    assert describe_cuda_state("2.14.1+cpu", None, None, "0,1") == (
        "torch.cuda.is_available() is False; torch 2.14.1+cpu is built without CUDA; no NVIDIA "
        "driver found (/proc/driver/nvidia/version does not exist); CUDA_VISIBLE_DEVICES is '0,1'"
    )


@pytest.mark.parametrize(
    "text, version",
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC "
         "2023\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "535.104.05"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  "
         "(dvs-builder@U16-I3-C03-3-1)  Thu Feb 22 01:25:25 UTC 2024\n", "550.54.14"),
        ("something else\n", "of unknown version"),
    ],
)  # fmt: skip
def test_nvidia_driver_version(tmp_path, text, version):
    (tmp_path / "version").write_text(text)
    assert nvidia_driver_version(str(tmp_path / "version")) == version
    assert nvidia_driver_version(str(tmp_path / "missing")) is None


def test_check_gpus_per_machine(monkeypatch):
    check_gpus_per_machine(2, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError) as error:
        check_gpus_per_machine(8, 1)
    assert str(error.value) == (
        "--num-gpus 8 starts 8 workers with one GPU each, but CUDA sees 1 GPU(s) on this machine "
        "(torch.cuda.device_count(); CUDA_VISIBLE_DEVICES is '0'): use --num-gpus 1, or "
        "MODEL.DEVICE cpu to train on the CPU."
    )


def test_threads_per_worker():
    """Workers on one machine share its cores, GPU workers too (8 GPUs on 16 cores: 2 each)."""
    assert threads_per_worker(8, cores=16) == 2
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(8, cores=4) == 1  # at least one
    assert threads_per_worker(1, cores=16) == 16


def _report_worker(args):
    """A train_net main that writes what its worker sees: its GPUs and its process group."""
    report = {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "backend": torch.distributed.get_backend(),
    }
    with open(os.path.join(args.report_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(report, f)


def test_cpu_workers_meet_with_gloo_and_see_no_gpu(tmp_path):
    """Detectron2's launch of 2 workers for MODEL.DEVICE cpu: gloo, no GPU visible in the workers
    (so also on a machine with GPUs, where it would pick NCCL); this process's environment and
    signal handlers are left as they were."""
    args = parse(
        "--num-gpus", "2", "--dist-url", "auto", "--config-file", QUICKSTART, "MODEL.DEVICE", "cpu"
    )  # fmt: skip
    args.report_dir = str(tmp_path)
    before = os.environ.get("CUDA_VISIBLE_DEVICES"), signal.getsignal(signal.SIGTERM)
    launch(_report_worker, args)
    assert (os.environ.get("CUDA_VISIBLE_DEVICES"), signal.getsignal(signal.SIGTERM)) == before
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.json") as f:
            assert json.load(f) == {"CUDA_VISIBLE_DEVICES": "", "backend": "gloo"}


# ----------------------------------------------------------------------------------------------
# Through train_net.py as a user runs it: refused before any worker starts or anything is written.


def _train_net(*argv, env=None):
    return subprocess.run(
        [sys.executable, "train_net.py", *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def _cuda_state_without_gpus() -> str:
    """What the refusal says of CUDA in a process that sees no GPU (CUDA_VISIBLE_DEVICES='')."""
    return describe_cuda_state(torch.__version__, torch.version.cuda, nvidia_driver_version(), "")


def _make_cuda_usable() -> str:
    if torch.version.cuda is None:
        return "Install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
    return (
        "Make a GPU usable (nvidia-smi lists the GPUs its driver sees; the driver must support "
        f"CUDA {torch.version.cuda}, or install a torch build for the driver you have)"
    )


@pytest.mark.parametrize(
    "argv, request_, fallback",
    [
        (["--num-gpus", "2", "--config-file", QUICKSTART],
         "--num-gpus 2: 2 workers on GPUs (MODEL.DEVICE is not set: Detectron2's default is cuda)",
         "add MODEL.DEVICE cpu to train 2 processes on the CPU"),
        (["--config-file", GPU_QUICKSTART],
         f"MODEL.DEVICE cuda (set in {GPU_QUICKSTART}) needs CUDA",
         "set MODEL.DEVICE cpu to run on the CPU"),
        (["--config-file", QUICKSTART, "MODEL.DEVICE", "cuda:0"],
         "MODEL.DEVICE cuda:0 (set on the command line) needs CUDA",
         "set MODEL.DEVICE cpu to run on the CPU"),
    ],
    ids=["num-gpus", "config-file", "command-line"],
)  # fmt: skip
def test_gpus_asked_for_where_cuda_is_not_usable_are_refused(tmp_path, argv, request_, fallback):
    done = _train_net(*argv, "OUTPUT_DIR", str(tmp_path / "out"), env=environment_without_gpus())
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"retina_plugin.engine.device.CudaUnavailable: {request_}, but CUDA is not usable here: "
        f"{_cuda_state_without_gpus()}. {_make_cuda_usable()}, or {fallback}."
    )
    assert "Rank of current process" not in done.stdout + done.stderr  # no worker set up
    assert not (tmp_path / "out").exists()


def test_quickstart_default_device_on_one_process(tmp_path):
    """The quick start as on a laptop (no MODEL.DEVICE anywhere): the GPU where CUDA is usable,
    the CPU with a warning where it is not. --eval-only of no test set: setup and the model."""
    opts = tiny_shapes_overrides(tmp_path / "shapes", device=None)
    assert "MODEL.DEVICE" not in opts
    done = _train_net(
        "--eval-only", "--config-file", QUICKSTART, *opts, "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(tmp_path / "out"), env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"Worker 0 of 1; on this machine 0 of 1; 1 torch threads; {device}, one process" in log
    warned = "No CUDA device is available: training and testing on the CPU." in log
    assert warned == (device == "cpu")
