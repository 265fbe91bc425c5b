#!/usr/bin/env python
"""
Side-by-side speed (and memory) of retina-plugin against Detectron2 / fvcore, in one process.

    python tools/benchmark.py                     # everything, on the CPU
    python tools/benchmark.py --section loss      # focal loss only (seconds)
    python tools/benchmark.py --section deploy    # ONNX Runtime against PyTorch inference
    python tools/benchmark.py --section coco-eval # pycocotools against faster-coco-eval
    python tools/benchmark.py --section ohem      # OHEM's loss step, one 800 px image, one box
    python tools/benchmark.py --device cuda       # on a GPU

It first prints the machine's float32 matmul speed (GFLOP/s), by which readers can place their
own machine. Every comparison runs its candidates interleaved (A, B, A, B, ...) on the same inputs
and prints medians and ratios, since absolute times on shared machines drift. Each comparison also
checks that the candidates agree (losses, gradients, detections) before timing them; on CUDA the
model's checks run with TF32 off, its timings with PyTorch's defaults. Peak memory and compile
cost are measured in fresh processes (``python -m retina_plugin.benchmark.probe``). The logic
lives in retina_plugin.benchmark; this is its command line.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse

from retina_plugin.benchmark import LossProblem, bench_loss, bench_model, print_machine


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--section", nargs="+", choices=("all", "loss", "model", "deploy", "coco-eval", "ohem"), default=["all"],
        help="one or more sections (default: all)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--matmul-size", type=int, default=2048, help="of the machine-speed matmul")
    parser.add_argument("--anchors", type=int, default=240000, help="loss: M")
    parser.add_argument("--classes", type=int, default=80, help="loss: K")
    parser.add_argument("--loss-repeats", type=int, default=15)
    parser.add_argument(
        "--probes", action=argparse.BooleanOptionalAction, default=True,
        help="loss: measure peak memory and compile cost in fresh processes",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=512, help="model: square images")
    parser.add_argument("--batch", type=int, default=2, help="model: images per step")
    parser.add_argument("--model-repeats", type=int, default=5)
    parser.add_argument("--deploy-images", type=int, default=4, help="deploy: images (each timed)")
    parser.add_argument("--eval-images", type=int, default=5000, help="coco-eval: images")
    parser.add_argument("--eval-repeats", type=int, default=1, help="coco-eval: evaluations each")
    parser.add_argument("--ohem-image-size", type=int, default=800, help="ohem: square image")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    print_machine(args.device, args.matmul_size)
    all_sections = {"loss", "model", "deploy", "coco-eval", "ohem"}
    sections = all_sections if "all" in args.section else set(args.section)
    if "loss" in sections:
        problem = LossProblem(args.anchors, args.classes, args.device)
        bench_loss(problem, args.loss_repeats, probes=args.probes)
    if "model" in sections:
        bench_model(args.device, args.batch, args.image_size, args.model_repeats)
    if "deploy" in sections:
        from retina_plugin.benchmark.deploy_speed import bench_deploy  # needs the [export] extra

        bench_deploy(args.image_size, args.deploy_images, args.model_repeats)
    if "coco-eval" in sections:
        from retina_plugin.benchmark.coco_eval_speed import bench_coco_eval  # noqa: PLC0415

        bench_coco_eval(args.eval_images, args.eval_repeats)
    if "ohem" in sections:
        from retina_plugin.benchmark.ohem_speed import bench_ohem  # noqa: PLC0415

        bench_ohem(args.ohem_image_size, args.model_repeats, args.device)


if __name__ == "__main__":
    main()
