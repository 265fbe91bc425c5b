"""maybe_compile (retina_plugin/compile.py): the focal-loss kernel compiled once across anchor
counts, recompiles counted and logged, a failed compilation reported once with its rank, and
the cached focal-loss constants."""

import logging
import types

import pytest
import torch

from retina_plugin import compile as compile_module
from retina_plugin.compile import maybe_compile
from retina_plugin.losses import functional


@pytest.fixture
def compile_log(caplog, monkeypatch):
    # train_net's logger set-up (if a test ran it before) stops "retina_plugin" records.
    monkeypatch.setattr(logging.getLogger("retina_plugin"), "propagate", True)
    with caplog.at_level("INFO", logger="retina_plugin.compile"):
        yield lambda: list(  # pytest may hand one record to caplog through two loggers
            {
                id(r): r.getMessage() for r in caplog.records if r.name == "retina_plugin.compile"
            }.values()
        )


def _labels_problem(num_anchors, num_classes=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=generator)
    labels = torch.randint(-1, num_classes + 1, (num_anchors,), generator=generator)
    return logits, labels, *torch.tensor([0.25, 0.75, 2.0]).unbind()


def _rows_and_grad_kernel(**options):
    """The focal-loss kernel compiled on its own: Dynamo keeps what it learnt about a function
    (e.g. that a dimension varies) per code object, so each kernel gets a copy of the code that
    no earlier test compiled."""
    function = functional._focal_loss_rows_and_grad_from_labels
    _rows_and_grad_kernel.copies += 1
    name = f"{function.__name__}_copy{_rows_and_grad_kernel.copies}"
    fresh = types.FunctionType(
        function.__code__.replace(co_name=name), function.__globals__, name, function.__defaults__
    )
    return maybe_compile(fresh, "focal loss", **options)


_rows_and_grad_kernel.copies = 0


@pytest.mark.skipif(not compile_module._ENABLED, reason="RETINA_PLUGIN_COMPILE=0")
def test_focal_loss_compiled_once_across_anchor_counts(compile_log):
    # The training kernel (Inductor) with its anchor dimension dynamic: one multi-scale batch
    # after another changes M, and nothing compiles again.
    kernel = functional._compiled_rows_and_grad
    kernel(*_labels_problem(300))  # compiles, unless an earlier test compiled these shapes
    compiles, logged = kernel.num_compiles(), len(compile_log())
    for num_anchors in (517, 1000):
        inputs = _labels_problem(num_anchors, seed=num_anchors)
        rows, grad = kernel(*inputs)
        expected_rows, expected_grad = functional._focal_loss_rows_and_grad_from_labels(*inputs)
        torch.testing.assert_close(rows, expected_rows, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert kernel.num_compiles() == compiles
    assert compile_log()[logged:] == []


@pytest.mark.skipif(not compile_module._ENABLED, reason="RETINA_PLUGIN_COMPILE=0")
def test_static_anchor_dimension_compiles_again_and_logs_it(compile_log):
    # The same kernel with torch.compile's default (dynamic=None, nothing marked), through
    # Dynamo's eager backend (no code generation): the second anchor count compiles again.
    # Dynamo remembers dimensions that varied before (also across processes: its profile-guided
    # cache keys on the function's file, line and name) and would then compile the static kernel
    # dynamic at once: that memory is off here, so the count shows what marking the dimension does.
    dynamic = _rows_and_grad_kernel(dynamic_dims=((0, 0), (1, 0)), backend="eager")
    static = _rows_and_grad_kernel(backend="eager")
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        for num_anchors in (300, 517):
            for kernel in (dynamic, static):
                inputs = _labels_problem(num_anchors)  # new tensors: marks stay on a tensor
                rows, _ = kernel(*inputs)
                expected, _ = functional._focal_loss_rows_and_grad_from_labels(*inputs)
                torch.testing.assert_close(rows, expected, rtol=1e-6, atol=1e-7)
    assert (dynamic.num_compiles(), static.num_compiles()) == (1, 2)
    assert compile_log() == [
        "torch.compile of the focal loss: compiled again (graph 2), for inputs of shapes "
        "[(517, 6), (517,), (), (), ()]"
    ]


def _failing_backend(graph, example_inputs):
    raise RuntimeError("InductorError: no C++ compiler found\nmore details")


@pytest.mark.skipif(not compile_module._ENABLED, reason="RETINA_PLUGIN_COMPILE=0")
def test_compile_failure_falls_back_to_eager_and_says_so_once(compile_log):
    kernel = maybe_compile(lambda x: x * 2, "test kernel", backend=_failing_backend)
    assert kernel(torch.ones(2)).tolist() == [2.0, 2.0]
    assert kernel(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
    assert compile_log() == [
        "Rank 0: torch.compile of the test kernel failed, so this process runs it eagerly from "
        "now on (slower, with more memory for its temporaries): "
        "RuntimeError: InductorError: no C++ compiler found"
    ]
    assert kernel.num_compiles() == 1  # not retried after failing


def test_compile_switched_off_by_environment(monkeypatch):
    monkeypatch.setattr(compile_module, "_ENABLED", False)
    kernel = maybe_compile(lambda x: x + 1, "kernel", backend=_failing_backend)
    assert kernel(torch.zeros(1)).item() == 1.0
    assert kernel.num_compiles() == 0


# --- the focal loss's constants, built once per device and dtype ---


def test_constants_cached_per_dtype_and_device():
    float32, float64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    first = functional._constants(0.25, 2.0, float32)
    assert functional._constants(0.25, 2.0, torch.ones(5, 3)) is first  # same objects again
    assert [c.item() for c in first] == [0.25, 0.75, 2.0]
    assert all(c.dtype == torch.float32 and c.device.type == "cpu" for c in first)
    wide = functional._constants(0.25, 2.0, float64)
    assert wide is not first and all(c.dtype == torch.float64 for c in wide)
    assert [c.item() for c in functional._constants(-1.0, 0.5, float32)] == [1.0, 1.0, 0.5]
    alpha_pos, alpha_neg, gamma = functional._constants((0.5, 0.25), 1.0, float32)
    assert (alpha_pos.tolist(), alpha_neg.tolist(), gamma.item()) == ([0.5, 0.25], [0.5, 0.75], 1.0)


def test_constants_first_built_in_inference_mode_serve_training():
    with torch.inference_mode():
        constants = functional._constants(0.375, 3.0, torch.zeros(1))
    assert not any(c.is_inference() for c in constants)
    logits = torch.randn(4, 2, requires_grad=True)
    loss = functional.sigmoid_focal_loss_from_labels(
        logits, torch.tensor([0, 1, 2, -1]), 0.375, 3.0, compiled=False
    )
    loss.backward()
    assert logits.grad is not None
