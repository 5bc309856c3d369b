"""``bsi-d2 demo``: the whole toolkit on synthetic scans, from nothing to a BSI report."""

from __future__ import annotations

import argparse
from pathlib import Path

from bsi_d2.demo import CPU_CONFIG, GPU_CONFIG, DemoOptions, run_demo

HELP = "synthetic scans -> COCO -> training -> batch inference -> BSI report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoOptions()
    parser.add_argument("--out", type=Path, default=d.out, help="output folder (resumable)")
    parser.add_argument("--scans", type=int, default=d.scans, help="synthetic patients in all")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--config",
        default=None,
        help=f"config file (path or name in configs/); default {GPU_CONFIG} on a GPU, "
        f"{CPU_CONFIG} on a CPU; mask_rcnn_R_50_FPN_100ep_bsi.yaml is seed 000's schedule",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations (SOLVER.MAX_ITER); default: the config's",
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="inference batch")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--workers", type=int, default=None, help="processes for data making")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def main(args: argparse.Namespace) -> int:
    run_demo(
        DemoOptions(
            out=args.out,
            scans=args.scans,
            seed=args.seed,
            config=args.config,
            iterations=args.iterations,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            opts=list(args.opts),
        )
    )
    return 0
