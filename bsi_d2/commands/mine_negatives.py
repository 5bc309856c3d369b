"""``bsi-d2 mine-negatives --config-file C --weights W NORMAL_SCANS... --out DIR``: a model's
lesions on scans known to be free of metastases, as hard negatives for its next training."""

from __future__ import annotations

import argparse
import logging

from bsi_d2.commands._args import (
    add_config_file_argument,
    add_opts_argument,
    add_out_argument,
    add_progress_argument,
    add_salt_argument,
)

HELP = "a model's lesions on normal scans -> hard negatives (COCO + Labelme)"
PREDICT_DIR = "predict"  # the batch's own output folder inside --out

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="scans known to be free of metastases: DICOM, PNG/TIFF or Labelme files/folders",
    )
    add_config_file_argument(parser, "model config YAML (the one it was trained with)")
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="model weights: shorthand for --opts MODEL.WEIGHTS FILE (default: the config's)",
    )
    add_out_argument(
        parser,
        f"output folder: {PREDICT_DIR}/ (the batch, resumable), images/, annotations/"
        "instances_negatives.json, labelme/, negatives.json",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="scans per forward pass")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    parser.add_argument(
        "--score-thresh",
        type=float,
        help="score threshold, all classes: the lesions at least this sure become hard "
        "negatives (default BSI.SCORE_THRESH)",
    )
    parser.add_argument(
        "--class-thresh",
        action="append",
        default=[],
        metavar="CLASS=T",
        help="per-class threshold, repeatable, e.g. lesion=0.3 to mine more (default "
        "BSI.CLASS_SCORE_THRESH)",
    )
    parser.add_argument(
        "--match-views",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="merge a lesion seen in both views into one before writing it per view (default "
        "BSI.MATCH_VIEWS)",
    )
    parser.add_argument(
        "--replay",
        metavar="FILE",
        help="answer from a recording (predict --record) instead of a model; the config is "
        "optional (its BSI.TAXONOMY names the classes)",
    )
    add_salt_argument(parser)
    add_progress_argument(parser)
    add_opts_argument(parser)


def main(args: argparse.Namespace) -> int:
    from bsi_d2.commands.predict import batch_exit_code, model_and_options
    from bsi_d2.inference.batch import run_batch
    from bsi_d2.inference.negatives import MiningError, mine_negatives
    from bsi_d2.io.files import OutputDirError

    try:
        _, predictor, options = model_and_options(
            args, batch_size=args.batch_size, progress=args.progress
        )
    except OutputDirError as err:
        logger.error("%s", err)
        return 2
    predict_dir = args.out / PREDICT_DIR
    result = run_batch(args.inputs, predict_dir, predictor, predictor.taxonomy, options)
    logger.info("%s; predictions in %s", result.summary(), predict_dir)
    code = batch_exit_code(result, strict=False)
    if code:
        return code
    try:
        mined = mine_negatives(
            predict_dir,
            args.out,
            predictor.taxonomy,
            options.score_thresh,
            options.class_thresh,
            options.match_views,
            options.match_radius,
        )
    except MiningError as err:
        logger.error("%s", err)
        return 2
    print(f"{mined.summary()}; COCO in {args.out / 'annotations'}, Labelme in "
          f"{args.out / 'labelme'}")  # fmt: skip
    if mined.taxonomy_file is not None:
        print(
            f"  the model's taxonomy has no benign class: '{mined.negative_class}' was added; "
            f"train with BSI.TAXONOMY {mined.taxonomy_file}"
        )
    for skipped in mined.skipped:
        print(f"  skipped {skipped['key']}: {skipped['reason']}")
    return 0 if mined.scans else 1
