import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from retina_plugin.engine import build_optimizer
from retina_plugin.engine.amp import AnyDeviceAMPTrainer
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


def test_amp_trainer_takes_a_plain_step_on_cpu(amp_model):
    amp_model.train()
    batch = random_batch((2, 1), num_classes=3, size=(96, 128))
    optimizer = torch.optim.SGD(amp_model.parameters(), lr=0.01)
    trainer = AnyDeviceAMPTrainer(amp_model, [batch], optimizer)
    before = amp_model.head.cls_score.weight.detach().clone()
    with EventStorage():
        trainer.run_step()  # Detectron2's AMPTrainer asserts CUDA here
    assert not torch.equal(before, amp_model.head.cls_score.weight)


def test_bad_amp_dtype():
    cfg = tiny_config()
    cfg.MODEL.FOCAL_RETINA.AMP_DTYPE = "float8"
    with pytest.raises(ValueError) as error:
        build_model(cfg)
    assert str(error.value) == (
        "MODEL.FOCAL_RETINA.AMP_DTYPE = 'float8' is not one of ('auto', 'bfloat16', 'float16')."
    )
