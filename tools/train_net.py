#!/usr/bin/env python
"""Train or evaluate Mask R-CNN on registered bone-scan data sets, detectron2's train_net shape.

    python tools/train_net.py --config-file configs/mask_rcnn_R_18_FPN_cpu_bsi.yaml \
        BSI.DATASET_ROOT datasets/bsi OUTPUT_DIR output/r18
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/r18/model_final.pth

Runs on detectron2 where it is installed (MODEL.ENGINE auto/detectron2), else on torchvision.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bsi_d2.config import detectron2_available, setup_cfg
from bsi_d2.engine import load_engine, resolve_engine


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume", action="store_true", help="resume from OUTPUT_DIR's last checkpoint"
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    parser.add_argument(
        "--dist-url", default="auto", help="initialisation URL for distributed runs"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def setup(args: argparse.Namespace):
    cfg = setup_cfg(args.config_file, args.opts)
    if resolve_engine(cfg) == "detectron2":
        from detectron2.engine import default_setup

        default_setup(cfg, args)
    else:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    return cfg


def main(args: argparse.Namespace) -> dict:
    cfg = setup(args)
    engine = load_engine(cfg)
    if args.eval_only:
        return engine.evaluate(cfg, cfg.MODEL.WEIGHTS)
    return engine.train(cfg, resume=args.resume)


def launch(args: argparse.Namespace) -> dict | None:
    """detectron2's launcher for multi-GPU runs; a plain call otherwise."""
    if args.num_gpus * args.num_machines > 1:
        if not detectron2_available():
            raise SystemExit("multi-GPU runs use detectron2's launcher: install detectron2")
        from detectron2.engine import launch as d2_launch

        d2_launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
        return None
    return main(args)


if __name__ == "__main__":
    arguments = argument_parser().parse_args()
    print("Command Line Args:", arguments)
    result = launch(arguments)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    sys.exit(0)
