"""SOLVER.* range checks: each bad value fails when the trainer is built, naming key and value."""

import logging

import pytest

from retina_plugin.engine import check_solver_config
from tests.utils import QUICKSTART, parse, run_main, tiny_overrides


def _check(tiny_cfg, overrides, world_size=1):
    tiny_cfg.merge_from_list(overrides)
    check_solver_config(tiny_cfg, world_size)


def test_paper_and_quickstart_configs_pass(tiny_cfg):
    check_solver_config(tiny_cfg, world_size=8)  # Base-FocalRetina: SGD, 16 images, steps
    tiny_cfg.merge_from_file(QUICKSTART)
    check_solver_config(tiny_cfg, world_size=2)  # AdamW, cosine, clipping


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["SOLVER.FOCAL_RETINA.OPTIMIZER", "Adam"],
            "SOLVER.FOCAL_RETINA.OPTIMIZER = 'Adam' is not one of ('SGD', 'AdamW').",
        ),
        (
            ["SOLVER.BASE_LR", "0.0"],
            "SOLVER.BASE_LR = 0.0 is out of range: it must be finite and > 0.",
        ),
        (
            ["SOLVER.BASE_LR", "-0.01"],
            "SOLVER.BASE_LR = -0.01 is out of range: it must be finite and > 0.",
        ),
        (
            ["SOLVER.WEIGHT_DECAY", "-1e-4"],
            "SOLVER.WEIGHT_DECAY = -0.0001 is out of range: it must be >= 0.",
        ),
        (
            ["SOLVER.MOMENTUM", "1.0"],
            "SOLVER.MOMENTUM = 1.0 is out of range: it must lie in [0, 1).",
        ),
        (
            ["SOLVER.IMS_PER_BATCH", "0"],
            "SOLVER.IMS_PER_BATCH = 0 is out of range: it must be an integer >= 1.",
        ),
        (
            ["SOLVER.MAX_ITER", "0"],
            "SOLVER.MAX_ITER = 0 is out of range: it must be an integer >= 1.",
        ),
        (
            ["SOLVER.WARMUP_ITERS", "-1"],
            "SOLVER.WARMUP_ITERS = -1 is out of range: it must be an integer >= 0.",
        ),
        (
            ["SOLVER.WARMUP_FACTOR", "1.5"],
            "SOLVER.WARMUP_FACTOR = 1.5 is out of range: it must lie in [0, 1].",
        ),
        (
            ["SOLVER.WARMUP_METHOD", "cosine"],
            "SOLVER.WARMUP_METHOD = 'cosine' is not one of ('linear', 'constant').",
        ),
        (
            ["SOLVER.LR_SCHEDULER_NAME", "OneCycle"],
            "SOLVER.LR_SCHEDULER_NAME = 'OneCycle' is not one of ('WarmupMultiStepLR', "
            "'WarmupCosineLR', 'WarmupStepWithFixedGammaLR').",
        ),
        (
            ["SOLVER.STEPS", "(80000, 60000)"],
            "SOLVER.STEPS = (80000, 60000) must be increasing iteration numbers >= 1, e.g. "
            "(60000, 80000): the LR is multiplied by SOLVER.GAMMA at each.",
        ),
        (
            ["SOLVER.STEPS", "(60000, 60000)"],
            "SOLVER.STEPS = (60000, 60000) must be increasing iteration numbers >= 1, e.g. "
            "(60000, 80000): the LR is multiplied by SOLVER.GAMMA at each.",
        ),
        (["SOLVER.GAMMA", "0.0"], "SOLVER.GAMMA = 0.0 is out of range: it must be finite and > 0."),
        (
            ["SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.BASE_LR_END", "0.1"],
            "SOLVER.BASE_LR_END = 0.1 is out of range: it must lie in [0, 0.01].",
        ),
        (
            ["SOLVER.CHECKPOINT_PERIOD", "0"],
            "SOLVER.CHECKPOINT_PERIOD = 0 is out of range: it must be an integer >= 1.",
        ),
        (
            ["SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS", "['SIGTERM', 'SIGSTOP']"],
            "SOLVER.FOCAL_RETINA.PREEMPTION_SIGNALS = ['SIGTERM', 'SIGSTOP'] names ['SIGSTOP']; "
            "use names from ('SIGTERM', 'SIGUSR1', 'SIGUSR2', 'SIGINT', 'SIGHUP') (or an empty "
            "list to keep the signals' default actions).",
        ),
        (
            ["SOLVER.FOCAL_RETINA.LOG_PERIOD", "0"],
            "SOLVER.FOCAL_RETINA.LOG_PERIOD = 0 is out of range: it must be an integer >= 1.",
        ),
        (
            ["TEST.EVAL_PERIOD", "-5"],
            "TEST.EVAL_PERIOD = -5 is out of range: it must be an integer >= 0.",
        ),
        (
            ["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full"],
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE = 'full' is not one of ('value', 'norm').",
        ),
        (
            ["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.0"],
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0 is out of range: it must be finite and > 0.",
        ),
        (
            ["SOLVER.REFERENCE_WORLD_SIZE", "3"],
            "SOLVER.IMS_PER_BATCH = 16 must be divisible by SOLVER.REFERENCE_WORLD_SIZE = 3 (the "
            "batch is rescaled per worker).",
        ),
    ],
)
def test_bad_solver_value(tiny_cfg, overrides, message):
    with pytest.raises(ValueError) as error:
        _check(tiny_cfg, overrides)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "batch, world_size, choices", [(6, 4, "4 or 8"), (1, 2, "2"), (17, 8, "16 or 24")]
)
def test_batch_not_divisible_by_workers(tiny_cfg, batch, world_size, choices):
    with pytest.raises(ValueError) as error:
        _check(tiny_cfg, ["SOLVER.IMS_PER_BATCH", str(batch)], world_size)
    assert str(error.value) == (
        f"SOLVER.IMS_PER_BATCH = {batch} is the batch of all {world_size} workers together, so it "
        f"must be divisible by {world_size} (--num-gpus x --num-machines): use {choices}."
    )


def test_steps_beyond_max_iter_warn(tiny_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="retina_plugin.engine.solver_checks"):
        _check(tiny_cfg, ["SOLVER.MAX_ITER", "70000"])
    assert caplog.messages == [
        "SOLVER.STEPS = (60000, 80000): 80000 not below SOLVER.MAX_ITER = 70000, so the LR never "
        "drops there."
    ]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_lr(tiny_cfg, value):
    tiny_cfg.SOLVER.BASE_LR = value  # YAML's .nan / .inf; the command line cannot spell them
    with pytest.raises(ValueError) as error:
        check_solver_config(tiny_cfg)
    assert (
        str(error.value) == f"SOLVER.BASE_LR = {value} is out of range: it must be finite and > 0."
    )


def test_train_net_checks_them(tmp_path):
    overrides = tiny_overrides(tmp_path / "shapes", tmp_path / "output")
    args = parse("--config-file", QUICKSTART, *overrides, "SOLVER.CHECKPOINT_PERIOD", "0")
    with pytest.raises(ValueError) as error:
        run_main(args)
    assert str(error.value) == (
        "SOLVER.CHECKPOINT_PERIOD = 0 is out of range: it must be an integer >= 1."
    )
