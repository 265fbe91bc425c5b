"""retina_plugin.benchmark.gpu_check on the CPU: how it reads pytest's, train_net.py's and the
benchmarks' output, the summary it writes, and that a step that runs over is killed with its
children. (tools/gpu_check.py --device cpu --smoke runs the whole check in a minute or two.)"""

import dataclasses
import json
import sys
import time

import pytest

from retina_plugin.benchmark import gpu_check
from retina_plugin.benchmark.gpu_check import FAIL, PASS, SKIPPED, TIMEOUT, StepResult


@pytest.mark.parametrize(
    "returncode, output, expected",
    [
        (0, "...s.\n5 passed, 1 skipped in 3.21s\n", (PASS, {"passed": 5, "skipped": 1}, "")),
        (
            0,
            "SKIPPED [6] tests/cuda/test_a.py:9: needs CUDA\n"
            "SKIPPED [2] tests/cuda/test_b.py:4: needs CUDA\n8 skipped in 2.81s\n",
            (SKIPPED, {"skipped": 8}, "needs CUDA"),
        ),
        (
            1,
            "FAILED tests/cuda/test_a.py::test_x - AssertionError\n1 failed, 4 passed in 9.0s\n",
            (
                FAIL,
                {"failed": 1, "passed": 4},
                "pytest exit status 1\nFAILED tests/cuda/test_a.py::test_x - AssertionError",
            ),
        ),
        (2, "ERROR tests/x.py - ImportError\n1 error in 0.5s\n", None),
    ],
    ids=["passed", "all-skipped", "failed", "collection-error"],
)
def test_parse_pytest(returncode, output, expected):
    status, counts, detail = gpu_check.parse_pytest(returncode, output)
    if expected is None:
        assert (status, counts) == (FAIL, {"errors": 1})
        assert detail == "pytest exit status 2\nERROR tests/x.py - ImportError"
    else:
        assert (status, counts, detail) == expected


def test_markdown_rows_keep_numeric_rows_only():
    text = (
        "## Focal loss\n| path | median ms | speed-up |\n| --- | --- | --- |\n"
        "| detectron2 (fvcore jit, one-hot) | 10.5 | 1.00x |\n| ours | 2.0 | 5.25x |\n"
    )
    assert gpu_check.markdown_rows(text) == {
        "detectron2 (fvcore jit, one-hot)": ["10.5", "1.00x"],
        "ours": ["2.0", "5.25x"],
    }


def test_quickstart_figures(tmp_path):
    (tmp_path / "final_results.json").write_text(json.dumps({"bbox": {"AP": 41.5, "AP50": 70.0}}))
    records = [
        {"iteration": 19, "time": 0.9, "data_time": 0.5, "total_loss": 3.0},
        {"iteration": 39, "time": 0.2, "data_time": 0.01, "total_loss": 2.0},
        {"bbox/AP": 41.5, "iteration": 59},  # the evaluation, written by the same writer
        {"iteration": 59, "time": 0.4, "data_time": 0.03, "total_loss": 1.5},
        {"iteration": 79, "time": 0.3, "data_time": 0.02, "total_loss": 1.25},
    ]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    log = (
        "iter: 79  total_loss: 1.25  max_mem: 812M\n"
        "Overall training speed: 77 iterations in 0:00:25 (0.3247 s / it)\n"
    )
    figures = gpu_check.quickstart_figures(tmp_path, log, warmup_iters=20)
    assert figures == {
        "AP": 41.5,
        "AP50": 70.0,
        "iterations": 80,
        "s_per_iter": 0.3,  # the median of 0.2, 0.4 and 0.3 (iteration 19 is warm-up)
        "data_s_per_iter": 0.02,
        "last_total_loss": 1.25,
        "overall_s_per_iter": 0.3247,
        "max_mem_mib": 812,
    }
    assert gpu_check._quickstart_status(0, figures, log) == (PASS, "")
    assert gpu_check._quickstart_status(0, dict(figures, AP=float("nan")), log) == (
        FAIL,
        "no finite AP in final_results.json: nan",
    )


def test_summary_table_details_and_json(tmp_path):
    results = [
        StepResult("cuda-tests", SKIPPED, 2.5, {"skipped": 31}, "needs CUDA"),
        StepResult("parity", PASS, 10.0, {"passed": 3}),
        StepResult("model-bench", TIMEOUT, 60.04, detail="killed after 60 s; last lines:\nx"),
    ]
    text = gpu_check.write_summary(results, tmp_path, "GPU check", device="cpu")
    assert text.splitlines()[:7] == [
        "# GPU check",
        "",
        "| step | status | seconds | key figures |",
        "| --- | --- | --- | --- |",
        "| cuda-tests | SKIPPED | 2.5 | 31 skipped |",
        "| parity | PASS | 10.0 | 3 passed |",
        "| model-bench | TIMEOUT | 60.0 | killed after 60 s; last lines: |",
    ]
    assert "Steps took 73 s in all. Result: FAIL." in text
    assert "## model-bench: TIMEOUT\n\n```\nkilled after 60 s; last lines:\nx\n```" in text
    assert (tmp_path / "summary.md").read_text() == text
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["passed"] is False and record["device"] == "cpu"
    assert [s["status"] for s in record["steps"]] == [SKIPPED, PASS, TIMEOUT]
    assert gpu_check.passed(results[:2])


def test_a_step_that_runs_over_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    # A child process that would outlive its parent, as data loader workers do.
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "step.log"
    returncode, seconds = gpu_check.run_logged([sys.executable, "-c", code], log, timeout_s=3)
    assert returncode is None and 3 <= seconds < 10
    assert log.read_text() == "started\n"
    assert _ends_within(int(pid_file.read_text()), seconds=5)


def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` is gone or a zombie (killed, not yet reaped by init) within
    `seconds` (a signal is delivered asynchronously)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_skipped_and_out_of_budget_steps(tmp_path, monkeypatch):
    ran = []

    def step(name):
        return lambda run, timeout_s: ran.append(name) or StepResult(name, PASS, 1.0)

    steps = [("first", step("first"), False), ("second", step("second"), False)]
    steps += [("late", step("late"), False), ("optional", step("optional"), True)]
    monkeypatch.setattr(gpu_check, "STEPS", tuple(steps))
    sizes = dataclasses.replace(gpu_check.SMOKE, budget_s=30)
    # "first" takes the clock to 15 s: 15 s left, under the 20 s that a step needs to start.
    clock = iter([0.0, 0.0, 0.0, 15.0, 15.0, 15.0])
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: next(clock))
    results = gpu_check.run_gpu_check("cpu", tmp_path, sizes, skip={"second"})
    assert ran == ["first"]
    assert [(r.name, r.status, r.detail) for r in results] == [
        ("first", PASS, ""),
        ("second", SKIPPED, "--skip"),
        ("late", FAIL, "not run: 15 s left of the 30 s budget"),
        ("optional", SKIPPED, "not run: 15 s left of the 30 s budget"),
    ]


def test_ohem_bench_step_on_the_cpu(tmp_path):
    """The ohem-bench step as the GPU check runs it (its own process), on the CPU at 128 px:
    both states' table rows, and the headline made from them."""
    run = gpu_check.CheckRun("cpu", tmp_path, gpu_check.SMOKE, tmp_path / "scratch")
    run.logs.mkdir()  # as run_gpu_check makes it
    result = gpu_check.step_ohem_bench(run, timeout_s=120)
    assert result.status == PASS, result.detail
    rows = result.figures["rows"]
    assert list(rows) == ["fresh", "learned"]
    assert all(cells[0] == "3069" for cells in rows.values())  # anchors of a 128 px image
    assert gpu_check.headline(result) == "; ".join(
        f"{state}: {cells[2]} s, {cells[3]} MiB" for state, cells in rows.items()
    )
