import pytest
import torch
from detectron2.engine.train_loop import AMPTrainer, SimpleTrainer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from retina_plugin.engine import build_optimizer
from retina_plugin.engine.amp import build_train_step, check_amp_dtype_supported
from retina_plugin.modeling.autocast import resolve_amp_dtype
from tests.utils import random_batch, tiny_config


def test_sgd_is_detectron2s():
    cfg = tiny_config()
    optimizer = build_optimizer(cfg, build_model(cfg))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["lr"] == 0.01


def test_adamw_with_detectron2_parameter_rules():
    cfg = tiny_config()
    cfg.SOLVER.FOCAL_RETINA.OPTIMIZER = "AdamW"
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 0.003, 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.MODEL.RETINANET.NORM = "GN"
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {group["lr"] for group in optimizer.param_groups} == {0.003}
    # Norm layers get WEIGHT_DECAY_NORM (0), the others WEIGHT_DECAY.
    decay = {
        id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]
    }
    assert decay[id(model.head.cls_subnet[1].weight)] == 0.0  # a GroupNorm weight
    assert decay[id(model.head.cls_score.weight)] == 0.05
    # One fused kernel over all parameters (torch >= 2.4 on the CPU), not the per-tensor loop.
    assert {group["fused"] for group in optimizer.param_groups} == {True}


def test_fused_adamw_step_equals_the_per_tensor_loop():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.SOLVER.FOCAL_RETINA.OPTIMIZER = "AdamW"
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    copies = [p.detach().clone().requires_grad_() for p in params]
    fused = build_optimizer(cfg, model)
    loop = torch.optim.AdamW(copies, lr=cfg.SOLVER.BASE_LR, weight_decay=0.05, foreach=False)
    for _ in range(3):
        for p, q in zip(params, copies):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_unknown_optimizer():
    cfg = tiny_config()
    cfg.SOLVER.FOCAL_RETINA.OPTIMIZER = "Adam"
    with pytest.raises(ValueError) as error:
        build_optimizer(cfg, build_model(cfg))
    assert (
        str(error.value) == "SOLVER.FOCAL_RETINA.OPTIMIZER = 'Adam' is not one of ('SGD', 'AdamW')."
    )


@pytest.fixture
def amp_model():
    cfg = tiny_config()
    cfg.MODEL.RETINANET.NORM = "GN"
    cfg.MODEL.FPN.OUT_CHANNELS = 64  # GroupNorm(32) needs 2 values per group on the 1x1 P7
    cfg.SOLVER.AMP.ENABLED = True
    torch.manual_seed(0)
    return build_model(cfg)


def test_cpu_autocast_runs_head_in_bfloat16_and_losses_in_float32(amp_model):
    assert amp_model.amp_dtype == "auto"
    head_dtypes = []
    amp_model.head.register_forward_hook(lambda m, i, out: head_dtypes.append(out[0][0].dtype))
    amp_model.train()
    batch = random_batch((3, 2), num_classes=3, size=(96, 128))
    with EventStorage():
        losses = amp_model(batch)
        amp_model.amp_dtype = None
        full_precision = amp_model(batch)
    assert head_dtypes == [torch.bfloat16, torch.float32]
    for name, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        # bfloat16 keeps ~3 significant digits.
        assert value.item() == pytest.approx(full_precision[name].item(), rel=0.05)


def test_cpu_autocast_inference_boxes_in_float32(amp_model):
    amp_model.eval()
    amp_model.test_score_thresh = 0.0
    with torch.no_grad():
        (result,) = amp_model([{"image": torch.rand(3, 96, 128) * 255}])
    instances = result["instances"]
    assert len(instances) == 100
    assert (
        instances.pred_boxes.tensor.dtype == torch.float32
        and instances.scores.dtype == torch.float32
    )


def test_amp_on_cpu_takes_detectron2s_plain_step(amp_model):
    """bfloat16 needs no gradient scaling: SimpleTrainer's step (the model autocasts itself)."""
    cfg = tiny_config()
    cfg.SOLVER.AMP.ENABLED = True
    amp_model.train()
    batch = random_batch((2, 1), num_classes=3, size=(96, 128))
    optimizer = torch.optim.SGD(amp_model.parameters(), lr=0.01)
    trainer = build_train_step(cfg, amp_model, [batch], optimizer)
    assert type(trainer) is SimpleTrainer and not isinstance(trainer, AMPTrainer)
    before = amp_model.head.cls_score.weight.detach().clone()
    with EventStorage():
        trainer.run_step()  # Detectron2's AMPTrainer asserts CUDA here
    assert not torch.equal(before, amp_model.head.cls_score.weight)


@pytest.mark.parametrize(
    "amp_dtype, device, native_bfloat16, expected",
    [
        (None, "cpu", True, None),  # SOLVER.AMP.ENABLED False
        ("auto", "cpu", False, torch.bfloat16),
        ("auto", "cuda", False, torch.float16),
        ("native", "cpu", True, torch.bfloat16),
        ("native", "cpu", False, None),  # emulated bfloat16 is slower than float32
        ("bfloat16", "cpu", False, torch.bfloat16),
        ("float16", "cuda", True, torch.float16),
    ],
)
def test_resolve_amp_dtype(amp_dtype, device, native_bfloat16, expected):
    assert resolve_amp_dtype(amp_dtype, device, native_cpu_bfloat16=native_bfloat16) is expected


def test_native_amp_dtype_on_a_cpu_without_bfloat16_is_float32(amp_model):
    """ "native" on a CPU without AVX512-BF16/AMX: no autocast at all (the head stays float32)."""
    amp_model.amp_dtype = "native"
    head_dtypes = []
    amp_model.head.register_forward_hook(lambda m, i, out: head_dtypes.append(out[0][0].dtype))
    amp_model.eval()
    expected = resolve_amp_dtype("native", "cpu") or torch.float32  # this machine's answer
    with torch.no_grad():
        amp_model([{"image": torch.rand(3, 64, 64) * 255}])
    assert head_dtypes == [expected]


def test_amp_dtype_check_passes_on_the_cpu():
    for dtype in (None, torch.bfloat16, torch.float16):
        check_amp_dtype_supported(dtype, torch.device("cpu"))  # raises on pre-Ampere GPUs only


def test_bad_amp_dtype():
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.AMP_DTYPE = "float8"
    with pytest.raises(ValueError) as error:
        build_model(cfg)
    assert str(error.value) == (
        "MODEL.FOCAL_RETINA.AMP_DTYPE = 'float8' is not one of "
        "('auto', 'native', 'bfloat16', 'float16')."
    )
