"""``bsi-d2 pseudo-label``: a trained model's trusted predictions on unlabelled scans, as
model-made Labelme files to review and one COCO file to train on.

    bsi-d2 pseudo-label --config-file C --weights W unlabelled/ --out out/pseudo \
        --val-json out/coco/annotations/instances_val.json          # thresholds chosen on val
    bsi-d2 pseudo-label --config-file C --weights W unlabelled/ --out out/pseudo \
        --thresholds out/pseudo/thresholds.json                     # thresholds given
    bsi-d2 train --config-file C DATASETS.PSEUDO out/pseudo/pseudo_labels.json

Writes OUT/thresholds.json, OUT/scans/<key>/ as ``predict`` does (the Labelme files flagged
``model_made``), and OUT/pseudo_labels.json. See docs/learning_pseudo.md.
"""

from __future__ import annotations

import argparse
import json
import logging

from bsi_d2.commands._args import (
    add_config_file_argument,
    add_cut_below_knee_argument,
    add_opts_argument,
    add_out_argument,
    add_progress_argument,
    add_recursive_argument,
    add_salt_argument,
    add_threshold_choice_arguments,
)
from bsi_d2.io.limits import add_limit_arguments

HELP = "keep a model's trusted predictions on unlabelled scans as pseudo-labels"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsi_d2.commands.predict import add_output_arguments

    parser.add_argument("inputs", nargs="+", help="unlabelled DICOM or PNG/TIFF files/folders")
    add_config_file_argument(parser, "model config YAML (the one it was trained with)")
    parser.add_argument(
        "--weights", metavar="FILE", help="model weights (default: the config's MODEL.WEIGHTS)"
    )
    add_out_argument(parser, "output folder (a rerun with the same thresholds resumes it)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--val-json",
        metavar="COCO",
        help="labelled validation split (COCO, e.g. OUT/annotations/instances_val.json of "
        "`bsi-d2 convert`) on which each class's threshold is chosen",
    )
    source.add_argument(
        "--thresholds",
        metavar="FILE",
        help="per-class thresholds to use: a thresholds.json this command wrote, or "
        '{"class": threshold, ...}; a class left out or null gets no pseudo-label',
    )
    parser.add_argument(
        "--val-images",
        metavar="DIR",
        help="folder the --val-json file names are relative to (default: the converter's "
        "images/ beside annotations/, else the file's folder)",
    )
    add_threshold_choice_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="scans per forward pass")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    add_cut_below_knee_argument(parser)
    add_recursive_argument(parser)
    add_limit_arguments(parser)
    add_salt_argument(parser)
    add_progress_argument(parser)
    add_output_arguments(parser)
    add_opts_argument(parser)


def main(args: argparse.Namespace) -> int:
    from bsi_d2.commands.predict import batch_exit_code, model_and_options
    from bsi_d2.inference.outputs import parse_outputs
    from bsi_d2.inference.pseudo import (
        PseudoLabelError,
        choose_thresholds,
        pseudo_label_scans,
        read_thresholds,
    )
    from bsi_d2.io.files import OutputDirError

    try:
        outputs = parse_outputs(args.outputs)
        _, predictor, options = model_and_options(
            args,
            batch_size=args.batch_size,
            cut_below_knee=args.cut_below_knee,
            recursive=args.recursive,
            progress=args.progress,
            outputs=outputs,
            writers=max(0, args.writers),
        )
    except (ValueError, OutputDirError) as err:
        logger.error("%s", err)
        return 2
    taxonomy = predictor.taxonomy
    try:
        if args.thresholds:
            thresholds = read_thresholds(args.thresholds, taxonomy)
        else:
            thresholds = choose_thresholds(predictor, args.val_json, taxonomy,
                                           args.target_precision, args.match_iou,
                                           args.val_images)  # fmt: skip
        summary = pseudo_label_scans(
            args.inputs, args.out, predictor, taxonomy, thresholds, options
        )
    except PseudoLabelError as err:
        logger.error("%s", err)
        return 2
    if args.record:
        predictor.save(args.record)
        logger.info("predictions of %d scans recorded in %s", len(predictor.entries), args.record)
    result = summary.pop("batch")
    logger.info("%s; pseudo-labels in %s", result.summary(), summary["coco_file"])
    print(json.dumps(summary, indent=2))
    return batch_exit_code(result, strict=False)
