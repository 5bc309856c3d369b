"""``bsi-d2 self-train``: K rounds of train -> pseudo-label -> retrain on labelled plus
pseudo-labelled scans.

    bsi-d2 self-train --config-file configs/mask_rcnn_R_18_FPN_cpu_bsi.yaml --rounds 2 \
        --out out/self_train --unlabelled unlabelled/ \
        BSI.DATASET_ROOT out/coco DATASETS.TEST "('bsi_val',)"

Writes OUT/round{k}/ (training), OUT/round{k}/pseudo/ (pseudo-labels) and OUT/self_train.json
(each round's evaluation); a rerun resumes. See docs/learning_pseudo.md.
"""

from __future__ import annotations

import argparse
import logging

from bsi_d2.commands._args import (
    add_config_file_argument,
    add_out_argument,
    add_salt_argument,
    add_threshold_choice_arguments,
)

HELP = "rounds of train -> pseudo-label -> retrain"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:

    add_config_file_argument(parser, "path to config file")
    add_out_argument(parser, "output folder (a rerun resumes it; more --rounds extend it)")
    parser.add_argument(
        "--unlabelled",
        action="append",
        required=True,
        metavar="PATH",
        help="unlabelled DICOM or PNG/TIFF file or folder; repeatable",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="K: retraining rounds after round 0 (default 2)"
    )
    add_threshold_choice_arguments(parser)
    parser.add_argument(
        "--thresholds",
        metavar="FILE",
        help="fixed per-class thresholds for every round instead of choosing them on validation",
    )
    parser.add_argument(
        "--val-dataset",
        metavar="NAME",
        help="registered split the thresholds are chosen on (default: DATASETS.TEST[0])",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="start each round from the previous round's weights (default: from MODEL.WEIGHTS)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="scans per forward pass")
    parser.add_argument("--device", help="inference device (default: MODEL.DEVICE)")
    add_salt_argument(parser)
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every round"
    )


def main(args: argparse.Namespace) -> int:
    from bsi_d2.inference.pseudo import PseudoLabelError
    from bsi_d2.workflows.self_train import SelfTrainOptions, format_rounds, run_self_train

    opts = list(args.opts or [])
    options = SelfTrainOptions(
        out=args.out,
        unlabelled=[str(p) for p in args.unlabelled],
        rounds=args.rounds,
        config_file=args.config_file or None,
        opts=opts,
        target_precision=args.target_precision,
        match_iou=args.match_iou,
        thresholds=args.thresholds,
        val_dataset=args.val_dataset,
        warm_start=args.warm_start,
        batch_size=max(1, args.batch_size),
        device=args.device,
        salt=args.salt,
        progress=args.progress,
    )
    try:
        state = run_self_train(options)  # a bad config: one line and exit 2, from bsi_d2.cli
    except PseudoLabelError as err:
        logger.error("%s", err)
        return 2
    print(format_rounds(state))
    return 0
