"""``bsi-d2 rank-unlabelled``: which unlabelled scan to annotate next, most uncertain first."""

from __future__ import annotations

import argparse
import logging

from bsi_d2.commands._args import (
    add_config_file_argument,
    add_cut_below_knee_argument,
    add_opts_argument,
    add_out_argument,
    add_progress_argument,
    add_recursive_argument,
    add_salt_argument,
    add_score_threshold_arguments,
)
from bsi_d2.io.limits import add_limit_arguments

HELP = "order unlabelled scans by model uncertainty, Labelme files for the top N"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsi_d2.inference.uncertainty import BSI_WEIGHT, DEFAULT_AUGMENTATIONS, INTENSITY_FACTOR
    from bsi_d2.workflows.active import DEFAULT_TOP, SCORERS

    parser.add_argument("inputs", nargs="+", help="unlabelled DICOM, PNG/TIFF files or folders")
    add_config_file_argument(parser, "model config YAML (the one it was trained with)")
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="model weights: shorthand for --opts MODEL.WEIGHTS FILE (default: the config's)",
    )
    add_out_argument(parser, "output folder: ranking.csv, ranking.json, labelme/ (a rerun resumes)")
    parser.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"pre-filled Labelme files for the first N scans (default {DEFAULT_TOP})",
    )
    parser.add_argument(
        "--method",
        choices=list(SCORERS),
        default="tta",
        help="tta: (1 - mean pairwise IoU of the kept lesion masks) + W * (max - min BSI) over "
        "the scan and its augmentations; entropy: mean binary entropy of the kept detections' "
        "scores (default tta)",
    )
    parser.add_argument(
        "--augment",
        default=",".join(DEFAULT_AUGMENTATIONS),
        metavar="LIST",
        help="tta's augmentations beside the scan itself: hflip (mirrored merged image, classes "
        f"swapped back by the taxonomy's flip map), intensity (display x{INTENSITY_FACTOR}); "
        "default %(default)s",
    )
    parser.add_argument(
        "--bsi-weight",
        type=float,
        default=BSI_WEIGHT,
        metavar="W",
        help="tta: weight of one BSI point of spread against the masks' disagreement (default "
        f"{BSI_WEIGHT})",
    )
    parser.add_argument(
        "--random",
        type=int,
        metavar="SEED",
        help="rank in a random order drawn from SEED instead (the control arm of a comparison)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="scans per forward pass")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    add_score_threshold_arguments(parser)
    add_cut_below_knee_argument(parser)
    add_recursive_argument(parser)
    add_limit_arguments(parser)
    add_salt_argument(parser)
    add_progress_argument(parser)
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="also save every prediction of the model, augmented images' too, for --replay",
    )
    parser.add_argument(
        "--replay",
        metavar="FILE",
        help="answer from a recording (--record) instead of a model; the config is optional",
    )
    parser.add_argument(
        "--writers", type=int, default=2, metavar="N", help="threads writing scans (0: inline)"
    )
    add_opts_argument(parser)


def main(args: argparse.Namespace) -> int:
    from bsi_d2.commands.predict import model_and_options
    from bsi_d2.inference.uncertainty import parse_augmentations
    from bsi_d2.io.files import OutputDirError
    from bsi_d2.workflows.active import RankingError, rank_unlabelled

    try:
        augmentations = parse_augmentations(args.augment)
    except ValueError as err:
        logger.error("--augment: %s", err)
        return 2
    try:
        _, predictor, options = model_and_options(
            args,
            batch_size=args.batch_size,
            cut_below_knee=args.cut_below_knee,
            recursive=args.recursive,
            progress=args.progress,
            writers=max(0, args.writers),
        )
    except OutputDirError as err:
        logger.error("%s", err)
        return 2
    try:
        ranking = rank_unlabelled(
            args.inputs,
            args.out,
            predictor,
            predictor.taxonomy,
            options,
            method=args.method,
            augmentations=augmentations,
            top=args.top,
            bsi_weight=args.bsi_weight,
            random_seed=args.random,
        )
    except RankingError as err:
        logger.error("%s", err)
        return 2
    if args.record:
        predictor.save(args.record)
        logger.info("predictions of %d images recorded in %s", len(predictor.entries), args.record)
    if not ranking.scans:
        logger.error("no scan was ranked; see errors.jsonl in the output folder")
        return 1
    return 0
