"""``bsi-d2 demo``: the whole toolkit on synthetic scans, from nothing to a BSI report."""

from __future__ import annotations

import argparse

from bsi_d2.commands._args import (
    add_config_file_argument,
    add_difficulty_argument,
    add_out_argument,
    add_workers_argument,
)
from bsi_d2.workflows.demo import CPU_CONFIG, GPU_CONFIG, DemoOptions, run_demo

HELP = "synthetic scans -> COCO -> training -> batch inference -> BSI report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoOptions()
    add_out_argument(parser, "output folder (resumable)", default=d.out)
    parser.add_argument("--scans", type=int, default=d.scans, help="synthetic patients in all")
    parser.add_argument("--seed", type=int, default=d.seed)
    add_config_file_argument(
        parser,
        f"config file (path or name in configs/); default {GPU_CONFIG} on a GPU, "
        f"{CPU_CONFIG} on a CPU; mask_rcnn_R_50_FPN_100ep_bsi.yaml is seed 000's schedule",
        deprecated=["--config"],
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations (SOLVER.MAX_ITER); default: the config's",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="inference batch")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    add_workers_argument(parser)
    add_difficulty_argument(parser, d.difficulty)
    parser.add_argument(
        "--label-benign",
        action="store_true",
        help="label the phantoms' benign look-alikes with the 'benign' class and train with "
        "the built-in benign taxonomy (BSI.TAXONOMY benign); the scans are the same as without",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def main(args: argparse.Namespace) -> int:
    run_demo(
        DemoOptions(
            out=args.out,
            scans=args.scans,
            seed=args.seed,
            config=args.config_file or None,
            iterations=args.iterations,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            difficulty=args.difficulty,
            label_benign=args.label_benign,
            opts=list(args.opts),
        )
    )
    return 0
