#!/usr/bin/env python
"""
Check and time retina-plugin on a GPU in one run of about 5 minutes, from a source checkout:

    python tools/gpu_check.py --output output/gpu_check              # on cuda
    python tools/gpu_check.py --output output/gpu_check --skip quickstart-bfloat16
    python tools/gpu_check.py --device cpu --smoke --output output/gpu_check_smoke  # 2-3 min

Steps, in order: machine (versions, GPU, capability, bfloat16, matmul speed), cuda-tests
(tests/cuda), parity (tests/modeling/test_drop_in_parity.py on the device), quickstart-float16
(train_net.py on configs/quickstart.yaml with float16 AMP, 200 iterations: seconds per iteration
and AP), loss-bench and model-bench (tools/benchmark.py's loss and model sections on the device),
quickstart-bfloat16 (if time is left). Each step but the first runs in a process of its own with
its own time limit, inside one budget; one that fails or runs over does not stop the others. The
summary table is printed last and written to OUTPUT/summary.md and OUTPUT/summary.json, each
step's output to OUTPUT/logs/STEP.log, the quick starts' metrics and logs to
OUTPUT/quickstart-*/ (their checkpoints and the dataset stay in --scratch). Exit status 0 only
if no step failed or ran over. ``--smoke`` shrinks every step (tiny sizes, a few iterations).
The logic lives in retina_plugin.benchmark.gpu_check; this is its command line.
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse
import dataclasses
import sys
import time

from retina_plugin.benchmark.gpu_check import (
    FULL,
    SMOKE,
    STEPS,
    passed,
    run_gpu_check,
    write_summary,
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="output/gpu_check", help="summary, logs, metrics")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--skip", nargs="+", default=[], choices=[name for name, _, _ in STEPS], metavar="STEP",
        help="steps not to run: " + ", ".join(name for name, _, _ in STEPS),
    )  # fmt: skip
    parser.add_argument(
        "--scratch", default=None,
        help="folder for the shapes dataset and the quick starts' checkpoints, kept out of "
        "--output (default: retina_plugin_gpu_check in the system's temporary folder)",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="every step tiny (a CPU try-out)")
    parser.add_argument(
        "--budget", type=float, default=None,
        help="seconds for all steps together (default: 300; --smoke: 480)",
    )  # fmt: skip
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.budget is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results = run_gpu_check(args.device, args.output, sizes, set(args.skip), args.scratch)
    title = f"GPU check on {args.device}{' (smoke)' if args.smoke else ''}, {started}"
    meta = {"device": args.device, "smoke": args.smoke, "started": started}
    summary = write_summary(results, args.output, title, sizes=dataclasses.asdict(sizes), **meta)
    print("\n" + summary)
    return 0 if passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
