"""``bsi-d2 train``: train or evaluate Mask R-CNN, the arguments of detectron2's train_net.py.

    bsi-d2 train --config-file configs/mask_rcnn_R_18_FPN_cpu_bsi.yaml BSI.DATASET_ROOT out/coco
    bsi-d2 train --config-file C --resume                      # continue from OUTPUT_DIR
    bsi-d2 train --config-file C --eval-only MODEL.WEIGHTS out/model_final.pth
    bsi-d2 train --config-file C MODEL.WEIGHTS prostate/model_final.pth   # fine-tune (seed 001)
    bsi-d2 train --config-file C --pseudo out/pseudo/pseudo_labels.json --pseudo-ratio 0.3

The engine is MODEL.ENGINE (auto: detectron2 where installed, else torchvision).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from bsi_d2.commands._args import add_config_file_argument, config_errors

HELP = "train Mask R-CNN (detectron2 or torchvision engine)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_file_argument(parser, "path to config file")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT_DIR's last checkpoint"
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs on this machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    parser.add_argument("--dist-url", default="auto", help="initialisation URL (detectron2)")
    parser.add_argument(
        "--pseudo",
        metavar="COCO",
        help="also train on these pseudo-labelled scans (`bsi-d2 pseudo-label`'s "
        "pseudo_labels.json, or a registered data set): DATASETS.PSEUDO",
    )
    parser.add_argument(
        "--pseudo-ratio",
        type=float,
        metavar="R",
        help="share of pseudo-labelled samples per pass over the training mix, in [0, 1] "
        "(DATASETS.PSEUDO_RATIO, default 0.5)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the config and train (or evaluate) on the engine it resolves to."""
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine import get_engine

    cfg = setup_cfg(args.config_file or None, args.opts)
    engine = get_engine(cfg)
    engine.default_setup(cfg, args)
    if args.eval_only:
        return engine.evaluate(cfg, str(cfg.MODEL.WEIGHTS) or None)
    return engine.train(cfg, resume=args.resume)


def launch(args: argparse.Namespace) -> dict[str, Any] | None:
    """One process per GPU for --num-gpus > 1 (the engine's launcher); under torchrun
    (WORLD_SIZE set) each process simply runs."""
    world = args.num_gpus * args.num_machines
    if world <= 1 or "WORLD_SIZE" in os.environ:
        return run(args)
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine import get_engine

    engine = get_engine(setup_cfg(args.config_file or None, args.opts))
    engine.launch(run, args, args.num_gpus, args.num_machines)
    return None


def pseudo_opts(args: argparse.Namespace) -> list[str]:
    """``opts`` with ``--pseudo`` and ``--pseudo-ratio`` as the config keys they stand for."""
    opts = list(args.opts or [])
    if getattr(args, "pseudo", None):
        opts += ["DATASETS.PSEUDO", str(args.pseudo)]
    if getattr(args, "pseudo_ratio", None) is not None:
        opts += ["DATASETS.PSEUDO_RATIO", str(float(args.pseudo_ratio))]
    return opts


def main(args: argparse.Namespace) -> int:
    args.opts = pseudo_opts(args)
    try:
        result = launch(args)
    except config_errors() as err:  # tools/train_net.py calls main without bsi_d2.cli
        logger.error("%s", err)
        return 2
    if result is not None:
        print(json.dumps(_headline(result), indent=2, default=str))
    return 0


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """The run's outcome without per-image detail: paths, iterations, and per test set the
    flattened numbers both engines log (mask AP, skeleton F1, lesion Dice ...)."""
    from bsi_d2.evaluation.results import EvaluationResult

    out = {k: v for k, v in result.items() if k not in ("evaluation", "losses")}
    for name, evaluation in (result.get("evaluation") or {}).items():
        if isinstance(evaluation, dict):
            typed = EvaluationResult.from_dict(evaluation)
            out[name] = {
                "mask_AP": typed.segm.ap,
                "skeleton_pixel_f1": typed.skeleton.f1,
                "lesion_dice": typed.lesion.dice_pooled,
                "n_images": typed.n_images,
            }
    return out
