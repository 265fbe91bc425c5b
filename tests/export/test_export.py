"""Exported models (ONNX through ONNX Runtime, torch.export, TorchScript) against PyTorch eager:
the quick-start architecture trained a few steps, each loss of the family, an R50-FPN with random
weights, images of several sizes, an image with no detections, tools/export_model.py and
tools/demo.py --model as users run them, their errors, and Detectron2's own export tests with
FocalRetinaNet in place of RetinaNet."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.export import scripting_with_instances
from detectron2.export.flatten import TracingAdapter
from detectron2.modeling import build_model, detector_postprocess
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.testing import assert_instances_allclose, convert_scripted_instances

from retina_plugin import load_config
from retina_plugin.demo import run_demo
from retina_plugin.export import (
    Comparison,
    ExportError,
    build_deployable,
    compare_detections,
    example_inputs,
    export_to,
    load_exported_function,
)
from tests.utils import CONFIGS_DIR, QUICKSTART, REPO_ROOT

# (height, width) of the test images: square, wide, tall, smaller than P7's stride, odd sizes.
SIZES = [(64, 64), (40, 100), (130, 50), (33, 47)]


def _images(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, *size, generator=generator) * 255).round() for size in SIZES]


def _compare(module, run, images, output_size=None) -> Comparison:
    comparison = Comparison()
    for image in images:
        size = torch.tensor(output_size or image.shape[1:])
        with torch.no_grad():
            expected = tuple(x.numpy() for x in module(image, size))
        compare_detections(comparison, str(tuple(image.shape)), expected,
                           run(image.numpy(), size.numpy()))  # fmt: skip
    return comparison


def _tool(name, *argv):
    return subprocess.run(
        [sys.executable, os.path.join("tools", f"{name}.py"), *map(str, argv)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _random_model(config_file, *opts):
    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    return build_deployable(cfg)


@pytest.fixture(scope="module")
def trained(tiny_trained):
    """The quick start trained 4 steps on 64 px shapes; its config options and weights."""
    root, opts, _ = tiny_trained
    return root, opts


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """tools/export_model.py as a user runs it: all three formats, checked on the 8 test images."""
    _, opts = trained
    output = tmp_path_factory.mktemp("exported")
    done = _tool("export_model", "--config-file", QUICKSTART, "--output", output,
                 "--format", "onnx", "torch-export", "torchscript", "onnx-int8",
                 "--opts", *opts)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return output, opts, done.stdout + done.stderr


def test_tool_checks_every_format(exported):
    output, _, log = exported
    assert sorted(os.listdir(output)) == [
        "model.int8.onnx", "model.json", "model.onnx", "model.pt2", "model.ts"
    ]  # fmt: skip
    for export_format, name in (("onnx", "model.onnx"), ("torch-export", "model.pt2"),
                                ("torchscript", "model.ts")):  # fmt: skip
        # 8 test images and the example image
        assert f"{export_format}: {output / name}: equal: 9 images" in log
    with open(output / "model.json") as f:
        info = json.load(f)
    assert info["preprocessing"] == {
        "input_format": "BGR", "min_size": 64, "max_size": 64, "alpha_background": [124, 116, 104]
    }  # fmt: skip
    assert info["class_names"][:2] == ["circle", "rectangle"] and info["num_classes"] == 8
    assert info["category_ids"] == list(range(1, 9))
    assert sorted(info["files"]) == ["onnx", "onnx-int8", "torch-export", "torchscript"]
    # int8 is approximate: reported, not compared (its AP change: docs/DEPLOY.md).
    assert f"onnx-int8: {output / 'model.int8.onnx'}: quantised, approximate: " in log


def test_int8_model_runs(exported):
    output, _, _ = exported
    run = load_exported_function(str(output / "model.int8.onnx"))
    boxes, scores, classes = run(_images()[1].numpy(), np.array([80, 200]))
    assert boxes.shape == (len(scores), 4) and 0 < len(scores) <= 100
    assert boxes[:, 0::2].max() <= 200 and boxes[:, 1::2].max() <= 80 and boxes.min() >= 0
    assert classes.dtype == np.int64 and set(classes.tolist()) <= set(range(8))


@pytest.mark.parametrize("name", ["model.onnx", "model.pt2", "model.ts"])
def test_sizes_and_aspect_ratios(exported, name):
    """One file, images of several sizes (one whose P7 is 1 pixel), boxes mapped to other sizes."""
    output, opts, _ = exported
    module = build_deployable(load_config(QUICKSTART, opts))
    run = load_exported_function(str(output / name))
    comparison = _compare(module, run, _images())
    assert comparison.equal, comparison.mismatches
    # SCORE_THRESH_TEST 0: up to DETECTIONS_PER_IMAGE each (NMS may leave fewer on 33 x 47).
    assert 300 < comparison.detections <= 4 * 100
    # Boxes scaled to a picture of another size than the network's input, and clipped to it.
    comparison = _compare(module, run, _images(1)[:1], output_size=(150, 90))
    assert comparison.equal, comparison.mismatches
    boxes, _, _ = run(_images(1)[0].numpy(), np.array([150, 90]))
    assert boxes[:, 0::2].max() <= 90 and boxes[:, 1::2].max() <= 150 and boxes.min() >= 0


def test_demo_with_exported_model(trained, exported, tmp_path):
    """tools/demo.py --model runs the ONNX file without PyTorch's model; same json as the
    PyTorch demo."""
    output, opts, _ = exported
    shapes = next(p for p in (trained[0] / "shapes").iterdir() if p.name.startswith("shapes_val"))
    done = _tool("demo", "--model", output / "model.onnx", "--input", shapes / "images",
                 "--output", tmp_path / "onnx", "--score-thresh", "0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_demo(QUICKSTART, [str(shapes / "images")], str(tmp_path / "pytorch"), 0.2, opts)
    assert sorted(os.listdir(tmp_path / "onnx")) == sorted(os.listdir(tmp_path / "pytorch"))
    with open(tmp_path / "onnx" / "detections.json") as f:
        onnx_detections = json.load(f)
    with open(tmp_path / "pytorch" / "detections.json") as f:
        pytorch_detections = json.load(f)
    assert len(onnx_detections) == len(pytorch_detections) > 8 * 90
    comparison = Comparison()
    for name in sorted({d["file_name"] for d in pytorch_detections}):
        expected, actual = (
            [np.array([d[k] for d in detections if d["file_name"] == name])
             for k in ("bbox", "score", "category_id")]
            for detections in (pytorch_detections, onnx_detections)
        )  # fmt: skip
        compare_detections(comparison, name, expected, actual)
    assert comparison.equal and comparison.images == 8, comparison.mismatches


def _trained_few_steps(loss, weights_path, steps=3):
    """The quick-start architecture with `loss`, trained `steps` SGD steps on two random
    pictures with boxes (its loss's gradients in every weight); saved as a checkpoint."""
    cfg = load_config(QUICKSTART, ["MODEL.DEVICE", "cpu", "MODEL.FOCAL_RETINA.LOSS_NAME", loss])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    boxes = Boxes(torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 36.0]]))
    batch = [
        {"image": image, "instances": Instances((64, 64), gt_boxes=boxes,
                                                gt_classes=torch.tensor([0, i]))}
        for i, image in enumerate(_images(seed=1)[:1] * 2)
    ]  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with EventStorage():
        for _ in range(steps):
            optimizer.zero_grad()
            sum(model(batch).values()).backward()
            optimizer.step()
    torch.save({"model": model.state_dict()}, weights_path)
    return ["MODEL.FOCAL_RETINA.LOSS_NAME", loss, "MODEL.WEIGHTS", str(weights_path)]


@pytest.mark.parametrize(
    "loss, formats",
    [
        # SigmoidFocalLoss: the trained quick start above, in every format.
        ("SigmoidCrossEntropyLoss", ["torchscript"]),
        ("OHEMCrossEntropyLoss", ["torchscript"]),
        ("SoftmaxFocalLoss", ["onnx", "torchscript"]),  # K + 1 logits, softmax
        ("SigmoidFocalLossStar", ["torchscript"]),  # sigmoid(gamma * x + beta)
    ],
)
def test_loss_family(loss, formats, tmp_path):
    """Each loss's scores (its class_scores) in the graph, after 3 training steps with that loss;
    every score kept. Also Detectron2's scripting of the model. With softmax FL, the inference
    options too: one NMS across classes, a score threshold per class."""
    opts = _trained_few_steps(loss, tmp_path / "weights.pth")
    if loss == "SoftmaxFocalLoss":
        opts += ["MODEL.FOCAL_RETINA.TEST.CLASS_AGNOSTIC_NMS", "True",
                 "MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS", str([0.0, 0.01] * 4)]  # fmt: skip
    module = _random_model(QUICKSTART, *opts, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0")
    for export_format in formats:
        path = export_to(export_format, module, example_inputs(module), str(tmp_path))
        comparison = _compare(module, load_exported_function(path), _images()[:3])
        assert comparison.equal, (export_format, comparison.mismatches)
        assert comparison.detections > 3 * 80  # SCORE_THRESH_TEST 0: up to 100 per image
    _assert_scripting_works(module.model, _images()[1])


def test_no_detections(tmp_path):
    """Random weights score about 0.01 (the prior), below 0.05: empty outputs of the right types.
    (A model trained 4 steps scores 0.1 or more on any picture, even one flat colour.)"""
    module = _random_model(QUICKSTART)
    image = _images()[0]
    for export_format in ("onnx", "torchscript"):  # torch-export: P7 of 1 pixel above
        path = export_to(export_format, module, example_inputs(module), str(tmp_path))
        boxes, scores, classes = load_exported_function(path)(image.numpy(), np.array([64, 64]))
        assert (boxes.shape, scores.shape, classes.shape) == ((0, 4), (0,), (0,))
        assert (boxes.dtype, scores.dtype, classes.dtype) == (np.float32, np.float32, np.int64)
    with torch.no_grad():
        assert len(module(image, torch.tensor([64, 64]))[0]) == 0


def test_r50_fpn_random_weights(tmp_path):
    """R50-FPN, 80 classes, every score kept: 5 levels x 1000 candidates, NMS and top-k busy."""
    module = _random_model(
        os.path.join(CONFIGS_DIR, "COCO-Detection", "focal_retina_R_50_FPN_1x.yaml"),
        "MODEL.WEIGHTS", "", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
        # Random weights need unit-scale inputs to keep their activations finite.
        "MODEL.PIXEL_STD", "[57.375, 57.12, 58.395]",
    )  # fmt: skip
    path = export_to("onnx", module, example_inputs(module), str(tmp_path))
    images = [torch.rand(3, 160, 224) * 255, torch.rand(3, 128, 96) * 255]
    comparison = _compare(module, load_exported_function(path), images)
    assert comparison.equal, comparison.mismatches
    assert comparison.detections == 2 * 100


def test_weights_that_do_not_fit(exported, tmp_path):
    _, opts, _ = exported
    weights = opts[opts.index("MODEL.WEIGHTS") + 1]
    done = _tool("export_model", "--config-file", QUICKSTART, "--output", tmp_path,
                 "--opts", *opts, "MODEL.RETINANET.NUM_CLASSES", "5")  # fmt: skip
    assert done.returncode != 0
    assert (f"export_model.py: MODEL.WEIGHTS {weights} does not fit the model of {QUICKSTART}: 2 "
            "parameter(s) have other shapes and 0 are missing (head.cls_score.weight: "
            "(72, 64, 3, 3) in the file, (45, 64, 3, 3) in the model; head.cls_score.bias: (72,) "
            "in the file, (45,) in the model). Export with the config (and KEY VALUE overrides) "
            "the weights were trained with.") in done.stderr  # fmt: skip
    assert os.listdir(tmp_path) == []


def test_unknown_format(tmp_path):
    done = _tool("export_model", "--config-file", QUICKSTART, "--output", tmp_path,
                 "--format", "tflite")  # fmt: skip
    assert done.returncode == 2
    assert ("export_model.py: error: argument --format: invalid choice: 'tflite' (choose from "
            "'onnx', 'onnx-int8', 'torch-export', 'torchscript')") in done.stderr  # fmt: skip


def test_unwritable_output(exported, tmp_path):
    _, opts, _ = exported
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = _tool("export_model", "--config-file", QUICKSTART, "--output", blocker / "sub",
                 "--opts", *opts)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().endswith(
        f"export_model.py: --output {blocker / 'sub'} is not a writable folder: Not a directory."
    )


class _BranchOnValues(torch.nn.Module):
    """A model part that branches on a tensor's value, which torch.export cannot capture."""

    def forward(self, image, output_size):
        if image.mean() > 100:
            return image[:, :1, :4].reshape(-1, 4), image.flatten()[:1], output_size[:1]
        return image[:, :1, :4].reshape(-1, 4), image.flatten()[:1], output_size[:1]


def test_exporter_failure_names_format_and_place(tmp_path):
    inputs = (torch.rand(3, 8, 8) * 255, torch.tensor([8, 8]))
    with pytest.raises(ExportError) as error:
        export_to("onnx", _BranchOnValues(), inputs, str(tmp_path))
    message = str(error.value)
    assert message.startswith("Exporting the model as onnx failed: ")
    assert "test_export.py" in message and "in forward" in message  # where the model failed
    assert "Try: " in message


# Detectron2's tests/test_export_torchscript.py and tests/test_export_onnx.py, RetinaNet cases,
# with FocalRetinaNet (the quick start trained above) in place of a model-zoo RetinaNet.


def _inference_func(model, image):
    return model.forward([{"image": image}])[0]["instances"]


@pytest.fixture(scope="module")
def focal_retinanet(trained):
    _, opts = trained
    return build_deployable(load_config(QUICKSTART, opts)).model


def _assert_scripting_works(model, image):
    """Detectron2's tests/test_export_torchscript.py, RetinaNet: scripting_with_instances, two
    images in a batch, each compared after detector_postprocess."""
    fields = {"pred_boxes": Boxes, "scores": torch.Tensor, "pred_classes": torch.Tensor}
    script_model = scripting_with_instances(model, fields)
    inputs = [{"image": image}] * 2
    with torch.no_grad():
        instance = model(inputs)[0]["instances"]
        scripted_instance = convert_scripted_instances(script_model(inputs)[0])
        scripted_instance = detector_postprocess(scripted_instance, *image.shape[1:])
    assert len(instance) > 0
    assert_instances_allclose(instance, scripted_instance)


def test_detectron2_scripting(focal_retinanet):
    _assert_scripting_works(focal_retinanet, (torch.rand(3, 96, 128) * 255).round())


def test_scripting_a_model_trained_with_amp():
    """A config with SOLVER.AMP.ENABLED: the bfloat16 guard's hooks (modeling/autocast.py) exist
    in training only, so the model in eval mode scripts; TorchScript runs it in float32."""
    cfg = load_config(QUICKSTART, ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True",
                                   "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])  # fmt: skip
    model = build_model(cfg)
    p7 = model.backbone.top_block.p7
    assert len(p7._forward_pre_hooks) == 1  # training
    model.eval()
    assert len(p7._forward_pre_hooks) == 0
    model.amp_dtype = None  # the eager reference in float32, as TorchScript
    _assert_scripting_works(model, _images()[1])


def test_detectron2_tracing(focal_retinanet, tmp_path):
    image = (torch.rand(3, 96, 128) * 255).round()
    wrapper = TracingAdapter(focal_retinanet, image, _inference_func)
    wrapper.eval()
    with torch.no_grad():
        small_image = torch.nn.functional.interpolate(image[None], scale_factor=0.5)[0]
        traced = torch.jit.trace(wrapper, (small_image,))  # traced on another size
        traced.save(str(tmp_path / "model.ts"))
        reloaded = torch.jit.load(str(tmp_path / "model.ts"))
        output = _inference_func(focal_retinanet, image)
        traced_output = wrapper.outputs_schema(reloaded(image))
    assert len(output) == 100
    assert_instances_allclose(output, traced_output, size_as_tensor=True)


def _run_adapter_onnx(adapter, path, image):
    """The ONNX file of a TracingAdapter, checked and run in ONNX Runtime; its Instances."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(onnx.load(path))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    return adapter.outputs_schema([torch.from_numpy(x) for x in outputs])


def _assert_same_100_detections(expected, actual):
    comparison = Comparison()
    compare_detections(comparison, "image", *[(x.pred_boxes.tensor.numpy(), x.scores.numpy(),
                       x.pred_classes.numpy()) for x in (expected, actual)])  # fmt: skip
    assert comparison.equal and comparison.detections == 100, comparison.mismatches


def test_detectron2_torchscript_onnx_export(focal_retinanet, tmp_path):
    image = (torch.rand(3, 96, 128) * 255).round()
    adapter = TracingAdapter(focal_retinanet, (image,), _inference_func)
    adapter.eval()
    path = str(tmp_path / "model.onnx")
    with torch.no_grad():
        torch.onnx.export(adapter, adapter.flattened_inputs, path, dynamo=False, opset_version=14,
                          training=torch.onnx.TrainingMode.EVAL)  # fmt: skip
        expected = _inference_func(focal_retinanet, image)
    actual = _run_adapter_onnx(adapter, path, image)
    _assert_same_100_detections(expected, actual)


def test_detectron2_tracing_adapter_dynamo_onnx_export(focal_retinanet, tmp_path):
    """torch 2.14's default ONNX exporter on Detectron2's TracingAdapter around FocalRetinaNet,
    as a user calls it after ``import retina_plugin.export`` (which registers the translation of
    FocalRetinaNet's NMS operator; no translation table needed)."""
    image = (torch.rand(3, 96, 128) * 255).round()
    adapter = TracingAdapter(focal_retinanet, (image,), _inference_func)
    adapter.eval()
    path = str(tmp_path / "model.onnx")
    with torch.no_grad():
        torch.onnx.export(adapter, adapter.flattened_inputs, dynamo=True, verbose=False).save(path)
        expected = _inference_func(focal_retinanet, image)
    actual = _run_adapter_onnx(adapter, path, image)
    _assert_same_100_detections(expected, actual)
    assert tuple(actual.image_size) == (96, 128)
