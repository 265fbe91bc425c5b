"""
One run that checks and times retina-plugin on a GPU (tools/gpu_check.py is its command line):

1. ``machine``: torch, CUDA, cuDNN and Triton versions, the GPU, its capability and bfloat16
   support, and the float32 matmul speed (:func:`.timing.print_machine`);
2. ``cuda-tests``: ``tests/cuda`` (the focal loss against fvcore, a training step per loss and
   precision, inference against the CPU);
3. ``parity``: ``tests/modeling/test_drop_in_parity.py`` on the device (``RETINA_TEST_DEVICE``);
4. ``quickstart-float16``: ``train_net.py`` on configs/quickstart.yaml with float16 AMP, as a user
   runs it, for a few hundred iterations: seconds per iteration and the final AP;
5. ``loss-bench`` and ``model-bench``: :func:`.loss_speed.bench_loss` and
   :func:`.model_speed.bench_model` on the device;
6. ``quickstart-bfloat16``: the quick start again with bfloat16 AMP, if time is left;
7. ``ohem-bench``: :func:`.ohem_speed.bench_ohem` on the device (OHEM's worst case: one box in an
   800 px image; its time and CUDA memory), if time is left.

Every step but the first runs in a process of its own (output in ``OUTPUT/logs/STEP.log``), with
its own time limit inside one budget for the whole run, and is killed with its children when it
runs over, so that a failing or hanging step does not stop the others. The run ends with one
table (also ``OUTPUT/summary.md`` and ``OUTPUT/summary.json``). ``smoke`` shrinks every step so
that the whole runs in a minute or two on a CPU. It runs from a source checkout (it runs the
repository's tests and ``train_net.py``).
"""

import contextlib
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .timing import print_machine

__all__ = [
    "STEPS",
    "StepResult",
    "CheckSizes",
    "FULL",
    "SMOKE",
    "run_gpu_check",
    "passed",
    "format_summary",
    "write_summary",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
PASS, FAIL, TIMEOUT, SKIPPED = "PASS", "FAIL", "TIMEOUT", "SKIPPED"


@dataclass
class StepResult:
    """What one step gave: `status` PASS, FAIL, TIMEOUT or SKIPPED; `figures` its key numbers;
    `detail` why it failed or was skipped (an error's last lines)."""

    name: str
    status: str
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    detail: str = ""


@dataclass(frozen=True)
class CheckSizes:
    """How big each step is, and its time limit (seconds)."""

    matmul: int
    loss_anchors: int
    loss_classes: int
    loss_repeats: int
    loss_probes: bool
    model_batch: int
    model_image: int
    model_repeats: int
    ohem_image: int  # side of the square image of the OHEM benchmark
    quickstart: tuple  # KEY VALUE overrides of configs/quickstart.yaml
    warmup_iters: int  # iterations left out of the quick start's seconds per iteration
    parity_tests: tuple  # pytest's -k selection of the parity tests, or ()
    timeouts: dict
    budget_s: float  # the whole run
    environment: dict = field(default_factory=dict)  # of every step's process


FULL = CheckSizes(
    matmul=2048, loss_anchors=240000, loss_classes=80, loss_repeats=15, loss_probes=True,
    model_batch=4, model_image=512, model_repeats=5, ohem_image=800,
    quickstart=("SOLVER.MAX_ITER", "200", "DATALOADER.NUM_WORKERS", "4"),
    warmup_iters=40,
    parity_tests=(),
    timeouts={"cuda-tests": 150, "parity": 90, "quickstart-float16": 150, "loss-bench": 120,
              "model-bench": 90, "quickstart-bfloat16": 120, "ohem-bench": 90},
    budget_s=300,
)  # fmt: skip

SMOKE = CheckSizes(
    matmul=256, loss_anchors=2000, loss_classes=8, loss_repeats=2, loss_probes=False,
    model_batch=1, model_image=64, model_repeats=1, ohem_image=128,
    # The quick start on 24 + 8 shapes images of 64 px, 2 per step (as tests/utils.py).
    quickstart=(
        "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "2", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.FOCAL_RETINA.LOG_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0",
        "DATASETS.FOCAL_RETINA.SHAPES.NUM_TRAIN", "24", "DATASETS.FOCAL_RETINA.SHAPES.NUM_VAL", "8",
        "DATASETS.FOCAL_RETINA.SHAPES.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "TEST.FOCAL_RETINA.NUM_VIS_IMAGES", "1",
    ),
    warmup_iters=2,
    parity_tests=("-k", "inference"),
    # Generous: 2 shared CPU cores can be 10x slower than an idle one.
    timeouts={"cuda-tests": 120, "parity": 120, "quickstart-float16": 150, "loss-bench": 120,
              "model-bench": 150, "quickstart-bfloat16": 150, "ohem-bench": 120},
    budget_s=480,
    # The CPU's C++ compiles of the fused loss would take most of a smoke run.
    environment={"RETINA_PLUGIN_COMPILE": "0"},
)  # fmt: skip


@dataclass(frozen=True)
class CheckRun:
    device: str
    output: Path  # logs, the summary and the quick starts' small files
    sizes: CheckSizes
    scratch: Path  # the shapes dataset and the quick starts' OUTPUT_DIRs (checkpoints)

    @property
    def logs(self) -> Path:
        return self.output / "logs"


# --- running a step in a process of its own ---


def run_logged(command: list, log_path: Path, timeout_s: float, env: dict = None):
    """Run `command` from the repository root with its output in `log_path`, in a process group
    of its own that is killed (children too: data loader and compile workers) once it ends or
    after `timeout_s`. Returns (exit status, or None when it ran over; seconds)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return returncode, time.perf_counter() - start


def _environment(run: CheckRun, **extra) -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1", **run.sizes.environment, **extra)


def _last_lines(text: str, count: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _subprocess_step(run: CheckRun, name: str, timeout_s: float, command: list, parse, **env):
    """Run `command` as step `name`; `parse(returncode, output)` gives (status, figures,
    detail) when it finished in time."""
    log_path = run.logs / f"{name}.log"
    returncode, seconds = run_logged(command, log_path, timeout_s, _environment(run, **env))
    output = log_path.read_text(errors="replace")
    if returncode is None:
        detail = f"killed after {timeout_s:.0f} s; last lines:\n{_last_lines(output)}"
        return StepResult(name, TIMEOUT, seconds, detail=detail)
    status, figures, detail = parse(returncode, output)
    return StepResult(name, status, seconds, figures, detail)


# --- pytest steps ---

_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def parse_pytest(returncode: int, output: str):
    """(status, {"passed": n, ...}, detail) from pytest's output with ``-rs``. All skipped:
    SKIPPED with the skip reasons."""
    summary = [
        line for line in output.splitlines() if _PYTEST_COUNT.search(line) and " in " in line
    ]
    counts = {}
    for number, outcome in _PYTEST_COUNT.findall(summary[-1] if summary else ""):
        counts["errors" if outcome.startswith("error") else outcome] = int(number)
    if returncode == 0 and counts.get("skipped") and not counts.get("passed"):
        reasons = sorted({line.rsplit(": ", 1)[-1] for line in output.splitlines()
                          if line.startswith("SKIPPED")})  # fmt: skip
        return SKIPPED, counts, "; ".join(reasons) or "all skipped"
    if returncode == 0 and counts.get("passed"):
        return PASS, counts, ""
    failures = [x for x in output.splitlines() if x.startswith(("FAILED", "ERROR"))]
    detail = "\n".join(failures[:15]) if failures else _last_lines(output)
    return FAIL, counts, f"pytest exit status {returncode}\n{detail}"


def _pytest_command(*paths) -> list:
    return [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *paths]


def _pytest_step(run: CheckRun, name: str, timeout_s: float, command: list, **env):
    result = _subprocess_step(run, name, timeout_s, command, parse_pytest, **env)
    if result.status == SKIPPED and run.device.startswith("cuda"):
        result.status = FAIL  # on a CUDA run, skipped tests are tests that did not run
    return result


def step_cuda_tests(run: CheckRun, timeout_s: float) -> StepResult:
    return _pytest_step(run, "cuda-tests", timeout_s, _pytest_command("tests/cuda"))


def step_parity(run: CheckRun, timeout_s: float) -> StepResult:
    command = _pytest_command("tests/modeling/test_drop_in_parity.py", *run.sizes.parity_tests)
    return _pytest_step(run, "parity", timeout_s, command, RETINA_TEST_DEVICE=run.device)


# --- the quick start through train_net.py ---

_TRAINING_SPEED = re.compile(r"Overall training speed: (\d+) iterations in \S+ \(([\d.]+) s / it\)")
_MAX_MEMORY = re.compile(r"max_mem: (\d+)M")


def quickstart_figures(output_dir: Path, log: str, warmup_iters: int) -> dict:
    """The AP (final_results.json), the median seconds per iteration and data time after
    `warmup_iters` (metrics.json, medians over each logging window), Detectron2's overall
    training speed and the peak CUDA memory (the log)."""
    figures = {}
    with contextlib.suppress(OSError, KeyError, ValueError):
        bbox = json.loads((output_dir / "final_results.json").read_text())["bbox"]
        figures.update(AP=bbox["AP"], AP50=bbox["AP50"])
    with contextlib.suppress(OSError, ValueError):
        lines = (output_dir / "metrics.json").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        records = [r for r in records if "time" in r]
        steady = [r for r in records if r["iteration"] >= warmup_iters] or records
        figures["iterations"] = records[-1]["iteration"] + 1
        figures["s_per_iter"] = statistics.median(r["time"] for r in steady)
        figures["data_s_per_iter"] = statistics.median(r.get("data_time", 0.0) for r in steady)
        figures["last_total_loss"] = records[-1].get("total_loss")
    speed = _TRAINING_SPEED.findall(log)
    if speed:
        figures["overall_s_per_iter"] = float(speed[-1][1])
    memory = _MAX_MEMORY.findall(log)
    if memory:
        figures["max_mem_mib"] = int(memory[-1])
    return figures


def _quickstart_status(returncode: int, figures: dict, log: str):
    if returncode != 0:
        return FAIL, f"train_net.py exit status {returncode}\n{_last_lines(log)}"
    if "No CUDA device is available" in log:
        return FAIL, "train_net.py fell back to the CPU: no CUDA device in its process"
    ap, loss = figures.get("AP"), figures.get("last_total_loss")
    if ap is None or not math.isfinite(ap):
        return FAIL, f"no finite AP in final_results.json: {ap}"
    if loss is None or not math.isfinite(loss):
        return FAIL, f"total_loss {loss} in metrics.json"
    return PASS, ""


_QUICKSTART_KEPT = ("metrics.json", "final_results.json", "log.txt", "config.yaml")


def step_quickstart(run: CheckRun, timeout_s: float, amp_dtype: str) -> StepResult:
    """train_net.py on configs/quickstart.yaml with `amp_dtype` AMP, OUTPUT_DIR in the scratch
    folder; its small files are copied to OUTPUT/quickstart-AMP_DTYPE (the checkpoints are
    not)."""
    name = f"quickstart-{amp_dtype}"
    output_dir = run.scratch / name
    shutil.rmtree(output_dir, ignore_errors=True)  # metrics.json is appended to, not replaced
    command = [
        sys.executable, "train_net.py", "--config-file", "configs/quickstart.yaml",
        "MODEL.DEVICE", run.device, "SOLVER.AMP.ENABLED", "True",
        "MODEL.FOCAL_RETINA.AMP_DTYPE", amp_dtype, *run.sizes.quickstart,
        "DATASETS.FOCAL_RETINA.SHAPES.ROOT", str(run.scratch / "shapes"),
        "OUTPUT_DIR", str(output_dir),
    ]  # fmt: skip

    def parse(returncode, log):
        (run.output / name).mkdir(exist_ok=True)
        for kept in _QUICKSTART_KEPT:
            if (output_dir / kept).is_file():
                shutil.copy(output_dir / kept, run.output / name / kept)
        figures = quickstart_figures(output_dir, log, run.sizes.warmup_iters)
        status, detail = _quickstart_status(returncode, figures, log)
        return status, figures, detail

    return _subprocess_step(run, name, timeout_s, command, parse)


# --- the benchmarks ---


def markdown_rows(text: str) -> dict:
    """{first cell: [other cells]} of the rows of markdown tables in `text` whose second cell is
    a number (header and separator rows are left out)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1:
            with contextlib.suppress(ValueError):
                float(cells[1])
                rows[cells[0]] = cells[1:]
    return rows


_COMPILE_COST = re.compile(r"([\d.]+) s with an empty Inductor cache, ([\d.]+) s with Inductor")


def _bench_parse(returncode: int, output: str):
    rows = markdown_rows(output)
    figures = {"rows": rows}
    compile_cost = _COMPILE_COST.search(output)
    if compile_cost:
        figures["compile_s_cold"], figures["compile_s_warm"] = map(float, compile_cost.groups())
    if returncode != 0:
        return FAIL, figures, f"exit status {returncode}\n{_last_lines(output)}"
    if not rows:
        return FAIL, figures, f"no table printed\n{_last_lines(output)}"
    return PASS, figures, ""


def _python_step(run: CheckRun, name: str, timeout_s: float, code: str) -> StepResult:
    return _subprocess_step(run, name, timeout_s, [sys.executable, "-c", code], _bench_parse)


def step_loss_bench(run: CheckRun, timeout_s: float) -> StepResult:
    s = run.sizes
    code = (
        "from retina_plugin.benchmark import LossProblem, bench_loss\n"
        f"bench_loss(LossProblem({s.loss_anchors}, {s.loss_classes}, {run.device!r}), "
        f"{s.loss_repeats}, probes={s.loss_probes})"
    )
    return _python_step(run, "loss-bench", timeout_s, code)


def step_model_bench(run: CheckRun, timeout_s: float) -> StepResult:
    s = run.sizes
    code = (
        "from retina_plugin.benchmark import bench_model\n"
        f"bench_model({run.device!r}, {s.model_batch}, {s.model_image}, {s.model_repeats})"
    )
    return _python_step(run, "model-bench", timeout_s, code)


def step_ohem_bench(run: CheckRun, timeout_s: float) -> StepResult:
    code = (
        "from retina_plugin.benchmark.ohem_speed import bench_ohem\n"
        f"bench_ohem({run.sizes.ohem_image}, 1, {run.device!r})"
    )
    return _python_step(run, "ohem-bench", timeout_s, code)


# --- the machine, in this process ---


class _Tee(io.StringIO):
    """Keeps what is printed, and prints it."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text):
        self.stream.write(text)
        return super().write(text)


def machine_figures(device: str) -> dict:
    """Versions, and the GPU of `device` with its compute capability and bfloat16 support."""

    def version(package):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(package)

    figures = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": version("torchvision"), "triton": version("triton"),
        "detectron2": version("sal-detectron2") or version("detectron2"),
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cpus": os.cpu_count(),
    }  # fmt: skip
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        properties = torch.cuda.get_device_properties(index)
        figures.update(
            gpu=properties.name, gpus=torch.cuda.device_count(),
            capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(), driver=_nvidia_driver(),
        )  # fmt: skip
    return figures


def _nvidia_driver():
    """The driver version that nvidia-smi reports, or None without it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    return None


def step_machine(run: CheckRun, timeout_s: float) -> StepResult:
    start = time.perf_counter()
    figures = machine_figures(run.device)
    print(json.dumps(figures))
    with contextlib.redirect_stdout(_Tee(sys.stdout)) as printed:
        print_machine(run.device, run.sizes.matmul)
    if run.device.startswith("cuda"):
        torch.cuda.empty_cache()  # give the steps' processes the matmul's memory back
    speed = re.search(r"Machine speed: ([\d.]+) GFLOP/s", printed.getvalue())
    figures["matmul_gflop_s"] = float(speed.group(1)) if speed else None
    return StepResult("machine", PASS, time.perf_counter() - start, figures)


# --- the whole run ---

# (name, step(run, timeout_s), optional: run only while time is left, else SKIPPED)
STEPS = (
    ("machine", step_machine, False),
    ("cuda-tests", step_cuda_tests, False),
    ("parity", step_parity, False),
    ("quickstart-float16", lambda run, t: step_quickstart(run, t, "float16"), False),
    ("loss-bench", step_loss_bench, False),
    ("model-bench", step_model_bench, False),
    ("quickstart-bfloat16", lambda run, t: step_quickstart(run, t, "bfloat16"), True),
    ("ohem-bench", step_ohem_bench, True),
)
_MIN_STEP_S = 20  # a step is not started with less time than this left
_MIN_OPTIONAL_S = 60


def _run_step(run: CheckRun, name: str, step: Callable, timeout_s: float) -> StepResult:
    print(f"\n[gpu_check] {name}: started, time limit {timeout_s:.0f} s", flush=True)
    start = time.perf_counter()
    try:
        result = step(run, timeout_s)
    except Exception:  # an in-process step: report it, go on with the others
        detail = _last_lines(traceback.format_exc())
        result = StepResult(name, FAIL, time.perf_counter() - start, detail=detail)
    print(f"[gpu_check] {name}: {result.status} in {result.seconds:.1f} s", flush=True)
    if result.detail:
        print(result.detail, flush=True)
    return result


def run_gpu_check(device: str, output, sizes: CheckSizes, skip=(), scratch=None) -> list:
    """Run every step of :data:`STEPS` not in `skip`, in order, within ``sizes.budget_s``;
    return their :class:`StepResult`. Large files go to `scratch` (default: a folder in the
    system's temporary folder), not to `output`."""
    scratch = scratch or os.path.join(tempfile.gettempdir(), "retina_plugin_gpu_check")
    run = CheckRun(device, Path(output), sizes, Path(scratch))
    run.logs.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + sizes.budget_s
    results = []
    for name, step, optional in STEPS:
        left = deadline - time.perf_counter()
        if name in skip:
            results.append(StepResult(name, SKIPPED, detail="--skip"))
        elif left < (_MIN_OPTIONAL_S if optional else _MIN_STEP_S):
            status = SKIPPED if optional else FAIL
            detail = f"not run: {left:.0f} s left of the {sizes.budget_s:.0f} s budget"
            results.append(StepResult(name, status, detail=detail))
        else:
            timeout_s = min(sizes.timeouts.get(name, left), left)
            results.append(_run_step(run, name, step, timeout_s))
    return results


def passed(results: list) -> bool:
    """No step failed or ran over (skipped ones do not count)."""
    return all(r.status in (PASS, SKIPPED) for r in results)


# --- the summary ---


def _fmt(value, spec=".3g") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def _machine_headline(f: dict) -> str:
    gpu = ""
    if "gpu" in f:
        gpu = (
            f"{f['gpus']} x {f['gpu']} (sm {f['capability']}, {f['memory_gib']} GiB, "
            f"bf16 {f['bf16']}, driver {f['driver']}); "
        )
    return (
        f"{gpu}torch {f.get('torch')}, CUDA {f.get('cuda')}, cuDNN {f.get('cudnn')}, "
        f"Triton {f.get('triton')}, Python {f.get('python')}; "
        f"matmul {_fmt(f.get('matmul_gflop_s'), '.0f')} GFLOP/s"
    )


def _quickstart_headline(f: dict) -> str:
    return (
        f"AP {_fmt(f.get('AP'), '.2f')} (AP50 {_fmt(f.get('AP50'), '.2f')}), "
        f"{_fmt(f.get('s_per_iter'), '.4f')} s/it (data {_fmt(f.get('data_s_per_iter'), '.4f')}; "
        f"Detectron2's overall {_fmt(f.get('overall_s_per_iter'), '.4f')}), "
        f"{_fmt(f.get('iterations'))} it, max_mem {_fmt(f.get('max_mem_mib'))} MiB"
    )


_LOSS_PATHS = {
    "detectron2 (fvcore jit, one-hot)": "detectron2",
    "retina_plugin from labels, compiled": "ours compiled",
    "retina_plugin from labels, eager": "ours eager",
    "fvcore jit, dense targets": "fvcore dense",
    "retina_plugin public, dense targets": "ours dense",
}


def _loss_headline(f: dict) -> str:
    paths = [
        f"{_LOSS_PATHS.get(name, name)} {cells[0]} ms ({cells[1]}, {cells[2]} MiB)"
        for name, cells in f.get("rows", {}).items()
    ]
    compile_cost = (
        f"; compile {f['compile_s_cold']} s cold, {f['compile_s_warm']} s warm"
        if "compile_s_cold" in f
        else ""
    )
    return "; ".join(paths) + compile_cost


def _model_headline(f: dict) -> str:
    rows = f.get("rows", {})
    short = {name: name.replace("FocalRetinaNet, ", "").split(" (")[0] for name in rows}
    train = "; ".join(f"{short[n]} {cells[0]}" for n, cells in rows.items())
    infer = "; ".join(f"{short[n]} {cells[2]}" for n, cells in rows.items() if len(cells) > 2)
    return f"train s/step: {train}; inference s: {infer}"


def headline(result: StepResult) -> str:
    """The key figures of `result` in one line."""
    f = result.figures
    if not f:  # an error: its message (a traceback's last line), or how a step ran over
        lines = result.detail.splitlines() or [""]
        return (lines[0] if result.status == TIMEOUT else lines[-1])[:160]
    if result.name == "machine":
        return _machine_headline(f)
    if result.name.startswith("quickstart"):
        return _quickstart_headline(f)
    if result.name == "loss-bench":
        return _loss_headline(f)
    if result.name == "model-bench":
        return _model_headline(f)
    if result.name == "ohem-bench":
        return "; ".join(f"{n}: {c[2]} s, {c[3]} MiB" for n, c in f["rows"].items() if len(c) > 3)
    return ", ".join(f"{v} {k}" for k, v in f.items())  # pytest's counts


def format_summary(results: list, title: str) -> str:
    """The markdown summary: one table of the steps, then the details of those that did not
    pass."""
    total = sum(r.seconds for r in results)
    lines = [
        f"# {title}",
        "",
        "| step | status | seconds | key figures |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        figures = headline(r).replace("|", "/")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {figures} |")
    verdict = "PASS" if passed(results) else "FAIL"
    lines += ["", f"Steps took {total:.0f} s in all. Result: {verdict}."]
    for r in results:
        if r.status != PASS and r.detail:
            lines += ["", f"## {r.name}: {r.status}", "", "```", r.detail, "```"]
    return "\n".join(lines) + "\n"


def write_summary(results: list, output: Path, title: str, **meta) -> str:
    """Write OUTPUT/summary.md and OUTPUT/summary.json; return the markdown."""
    text = format_summary(results, title)
    (Path(output) / "summary.md").write_text(text)
    record = dict(meta, title=title, passed=passed(results), steps=[asdict(r) for r in results])
    (Path(output) / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    return text
