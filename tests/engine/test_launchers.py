"""Launchers: Detectron2's multi-machine flags and torchrun (one or two "machines" on this host,
CPU processes with gloo) train the same run as one machine with two processes: the same losses at
every iteration, the same final weights and the same AP."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from retina_plugin.engine import torchrun_environment
from tests.utils import QUICKSTART, REPO_ROOT, generate_tiny_shapes, tiny_overrides

TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
MAX_ITER = 4
LOSSES = ("total_loss", "loss_cls", "loss_box_reg")
# Two "machines" on one host would each take all its cores, where the two processes of one machine
# share them; other thread counts round convolutions differently (AdamW then turns gradient
# differences of 1e-9 into weight differences of 1e-3). So every process of every run gets the
# threads that one of two processes on one machine gets.
THREADS = max(1, (os.cpu_count() or 1) // 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(root, output_dir):
    return tiny_overrides(root / "shapes", output_dir, max_iter=MAX_ITER) + [
        "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "0",
        "SOLVER.FOCAL_RETINA.LOG_PERIOD", "1",  # every iteration's losses in metrics.json
    ]  # fmt: skip


def _commands(kind: str, root, output_dir) -> list[list[str]]:
    """The command of each "machine" of a run of `kind`."""
    train = [TRAIN_NET, "--config-file", QUICKSTART]
    opts = _overrides(root, output_dir)
    port = str(_free_port())
    if kind == "launch 1x2":
        return [[sys.executable, *train, "--num-gpus", "2", "--dist-url", "auto", *opts]]
    if kind == "launch 2x1":
        url = f"tcp://127.0.0.1:{port}"
        return [
            [sys.executable, *train, "--num-machines", "2", "--machine-rank", str(rank),
             "--dist-url", url, *opts]
            for rank in (0, 1)
        ]  # fmt: skip
    if kind == "torchrun 1x2":
        return [[TORCHRUN, "--nproc-per-node", "2", "--master-port", port, *train, *opts]]
    if kind == "torchrun 2x1":
        return [
            [TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", *train, *opts]
            for rank in (0, 1)
        ]  # fmt: skip
    raise ValueError(kind)


def _run(commands, timeout=600) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    processes = [
        subprocess.Popen(
            c, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for c in commands
    ]
    results = []
    for process, command in zip(processes, commands):
        output, _ = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, process.returncode, output.decode()))
    return results


def _losses(output_dir) -> dict[str, list[float]]:
    with open(output_dir / "metrics.json") as f:
        records = [json.loads(line) for line in f if line.strip()]
    training = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in training] == list(range(MAX_ITER))
    return {key: [r[key] for r in training] for key in LOSSES}


RUNS = ("launch 1x2", "launch 2x1", "torchrun 1x2", "torchrun 2x1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("launchers")
    # Generated once here: two "machines" would each generate it (one process per machine does).
    generate_tiny_shapes(root / "shapes")
    outputs = {}
    for kind in RUNS:
        output_dir = root / kind.replace(" ", "_")
        results = _run(_commands(kind, root, output_dir))
        for result in results:
            assert result.returncode == 0, f"{kind}: {result.args}\n{result.stdout[-4000:]}"
        outputs[kind] = output_dir
    return outputs


@pytest.mark.parametrize("kind", RUNS)
def test_workers_know_their_place(runs, kind):
    """Rank, world size, local rank and size as Detectron2's comm reports them, the cores
    shared by the processes of one machine (THREADS each), and the gloo backend of CPU workers
    (each launcher, also where GPUs are visible)."""
    local_size = 2 if kind.endswith("1x2") else 1
    for rank, log in ((0, "log.txt"), (1, "log.txt.rank1")):
        local_rank = rank if local_size == 2 else 0
        with open(runs[kind] / log) as f:
            text = f.read()
        expected = (
            f"Worker {rank} of 2; on this machine {local_rank} of {local_size}; {THREADS} torch "
            "threads; cpu, gloo process group"  # MODEL.DEVICE cpu: gloo, GPUs or not
        )
        assert expected in text, kind


@pytest.mark.parametrize("kind", RUNS[1:])
def test_same_run_as_one_machine(runs, kind):
    reference, other = runs["launch 1x2"], runs[kind]
    expected, losses = _losses(reference), _losses(other)
    for key in LOSSES:
        torch.testing.assert_close(
            torch.tensor(losses[key]), torch.tensor(expected[key]), rtol=1e-6, atol=0
        )
    weights = torch.load(other / "model_final.pth", weights_only=True)["model"]
    expected_weights = torch.load(reference / "model_final.pth", weights_only=True)["model"]
    assert weights.keys() == expected_weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected_weights[name], rtol=1e-6, atol=1e-12)
    with open(reference / "final_results.json") as f:
        expected_ap = json.load(f)["bbox"]["AP"]
    with open(other / "final_results.json") as f:
        assert json.load(f)["bbox"]["AP"] == pytest.approx(expected_ap, rel=1e-9)


def test_num_gpus_under_torchrun_is_refused(tmp_path):
    command = [
        TORCHRUN, "--nproc-per-node", "1", "--master-port", str(_free_port()), TRAIN_NET,
        "--config-file", QUICKSTART, "--num-gpus", "2", *_overrides(tmp_path, tmp_path / "out"),
    ]  # fmt: skip
    (result,) = _run([command], timeout=300)
    assert result.returncode != 0
    assert (
        "ValueError: --num-gpus 2 --num-machines 1 under torchrun: torchrun starts the workers "
        "itself, one process each. Leave both at 1 and give torchrun --nproc-per-node N (and "
        "--nnodes M) instead."
    ) in result.stdout
    assert not (tmp_path / "out" / "model_final.pth").exists()


TORCHRUN_ENV = {
    "TORCHELASTIC_RUN_ID": "job",
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
}


def test_torchrun_environment():
    assert torchrun_environment({}) is None  # not started by torchrun
    env = torchrun_environment(TORCHRUN_ENV)
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.group_rank) == (
        3, 4, 1, 2, 1
    )  # fmt: skip


def test_torchrun_environment_errors():
    incomplete = {k: v for k, v in TORCHRUN_ENV.items() if k != "GROUP_RANK"}
    with pytest.raises(ValueError) as error:
        torchrun_environment(incomplete)
    assert str(error.value) == (
        "This process was started by torchrun (TORCHELASTIC_RUN_ID is set) but ['GROUP_RANK'] "
        "are not in its environment; start it with torchrun >= 1.10 or without torchrun."
    )
    uneven = {**TORCHRUN_ENV, "WORLD_SIZE": "3", "RANK": "2", "GROUP_RANK": "1", "LOCAL_RANK": "0"}
    with pytest.raises(ValueError) as error:
        torchrun_environment(uneven)
    assert str(error.value) == (
        "torchrun gave this worker RANK=2, WORLD_SIZE=3, GROUP_RANK=1, LOCAL_RANK=0, "
        "LOCAL_WORLD_SIZE=2: every machine must run the same number of workers (the same "
        "--nproc-per-node on every node)."
    )
