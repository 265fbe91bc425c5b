#!/usr/bin/env python
"""
Submit a training to SLURM (with submitit): one job whose tasks are the workers of the run.

    # COCO, 2 nodes x 8 GPUs, requeued with the exact iteration before each 24 h time limit
    python tools/submit.py --nodes 2 --gpus-per-node 8 --partition learn --time 24:00:00 \\
        --config-file configs/COCO-Detection/focal_retina_R_50_FPN_1x.yaml \\
        OUTPUT_DIR output/coco_R50_1x SOLVER.IMS_PER_BATCH 16
    # print the sbatch script only
    python tools/submit.py --dry-run --config-file ... KEY VALUE ...

Every other argument is train_net.py's (--config-file, --eval-only, KEY VALUE ...), except
--num-gpus and --num-machines: ask for --gpus-per-node and --nodes. The job id, its log and its
folder are printed and appended to OUTPUT_DIR/slurm_jobs.jsonl. Before the time limit SLURM
signals the job: the workers save the iteration they reached, the job requeues itself and
resumes there (retina_plugin.slurm.job). --train-script runs another train_net.py (one with its
own Trainer subclass).
"""

import warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and fvcore call as they are imported;
# their two FutureWarnings tell a user nothing to do. Silenced for those two imports only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    import detectron2.modeling.box_regression  # noqa: F401
    import fvcore.nn.focal_loss  # noqa: F401

import argparse
import os
import sys

from retina_plugin import slurm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Submit a train_net.py training to SLURM.",
        epilog="Other arguments are train_net.py's (--config-file ... KEY VALUE ...).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--train-script", default=os.path.join(REPO_ROOT, "train_net.py"),
        help="the train_net.py whose main(args) each task runs (default: the repository's)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script only")
    slurm.add_cluster_arguments(parser)
    return parser


def main(argv=None) -> int:
    args, train_argv = get_parser().parse_known_args(argv)
    job = slurm.submit_training(args.train_script, train_argv, args, dry_run=args.dry_run)
    if args.dry_run:
        print(job.sbatch, end="")
        print(f"# (dry run: nothing submitted; task 0 would log to {job.log})")
        return 0
    print(f"Submitted job {job.job_id} for {job.output_dir}")
    print(f"  log (task 0): {job.log}")
    print(f"  job folder:   {job.job_dir}")
    print(f"  recorded in:  {os.path.join(job.output_dir, slurm.JOBS_FILE)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"submit.py: {error}")
