"""``bsi-d2 kfold``: train and test every fold of the converter's k-fold split.

    bsi-d2 convert labelme/ --out out/coco --folds 10
    bsi-d2 kfold --config-file configs/mask_rcnn_R_50_FPN_100ep_bsi.yaml --folds 10 \
        BSI.DATASET_ROOT out/coco OUTPUT_DIR out/kfold

Writes OUTPUT_DIR/fold{K}/ per fold and OUTPUT_DIR/kfold_summary.{json,md} (mean +- SD per class).
"""

from __future__ import annotations

import argparse
import logging

from bsi_d2.commands._args import add_config_file_argument

HELP = "run every fold of a k-fold split and summarise"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_file_argument(parser, "path to config file")
    parser.add_argument("--folds", type=int, default=10, help="number of folds (default 10)")
    parser.add_argument(
        "--resume", action="store_true", help="continue each fold from its last checkpoint"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def main(args: argparse.Namespace) -> int:
    from bsi_d2.workflows.kfold import format_summary, run_kfold

    # a bad config or missing fold splits: one line and exit code 2, from bsi_d2.cli.main
    summary = run_kfold(args.config_file or None, args.opts, args.folds, args.resume)
    print(format_summary(summary))
    return 0
