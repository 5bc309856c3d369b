"""``bsi-d2 bsi``: BSI, BSTBI and reports from annotations instead of a model.

Labelme files (a physician's drawing, or ``predict``'s ``<key>.json`` corrected in Labelme) or a
COCO instances file go through exactly the post-processing, outputs and reports of
``bsi-d2 predict``; raw counts come from each image's ``<stem>.counts.png`` where present, and
the study link (``study_key``, ``patient_key``, the kept study date) from the ``<stem>.meta.json``
beside the Labelme file or its image (as ``preprocess --labelme`` and ``predict`` write them).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bsi_d2.commands._args import add_out_argument, add_taxonomy_argument
from bsi_d2.commands.predict import add_record_arguments, batch_exit_code
from bsi_d2.postprocess.bsi import COMBINE_RULES
from bsi_d2.postprocess.match import DEFAULT_MATCH_RADIUS

HELP = "BSI and reports from Labelme or COCO annotations (manual or corrected)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "annotations",
        nargs="+",
        type=Path,
        help="Labelme JSON files or folders of them, or a COCO instances JSON",
    )
    add_out_argument(parser, "output folder")
    add_taxonomy_argument(parser)
    parser.add_argument(
        "--images", type=Path, default=None, help="image folder of a COCO file's file_name"
    )
    parser.add_argument(
        "--combine", choices=COMBINE_RULES, default="mean", help="view rule (default mean)"
    )
    parser.add_argument(
        "--match-views",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a lesion outlined in both views is one lesion (default on)",
    )
    parser.add_argument(
        "--match-radius", type=float, default=DEFAULT_MATCH_RADIUS, help="pixels (default 20)"
    )
    add_record_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from bsi_d2.inference.annotations import (
        ENGINE_NAME,
        AnnotationError,
        AnnotationSource,
        annotation_inputs,
    )
    from bsi_d2.inference.batch import BatchOptions, run_batch
    from bsi_d2.io.files import OutputDirError, check_output_dir
    from bsi_d2.io.limits import limits_from
    from bsi_d2.taxonomy import TaxonomyError, load_taxonomy

    try:
        check_output_dir(args.out)
        taxonomy = load_taxonomy(args.taxonomy)
        files, coco = annotation_inputs(args.annotations, args.images)
    except (AnnotationError, TaxonomyError, OutputDirError) as err:
        logger.error("%s", err)
        return 2
    if not files:
        logger.error("no annotation files found in %s", ", ".join(map(str, args.annotations)))
        return 2
    options = BatchOptions(
        batch_size=1,
        score_thresh=0.0,
        combine=args.combine,
        match_views=args.match_views,
        match_radius=args.match_radius,
        recursive=False,
        salt=args.salt,
        keep_identity=args.keep_identity,
        dicom_out=args.dicom_out,
        keep_dates=args.keep_dates,
        progress=args.progress,
        prefetch=0,
        model={"engine": ENGINE_NAME, "config": None, "weights": None},
        limits=limits_from(None, args.max_file_mb, args.max_frame_pixels, args.max_frames),
    )
    result = run_batch(
        files, args.out, None, taxonomy, options, annotations=AnnotationSource(taxonomy, coco)
    )
    logger.info("%s; outputs in %s", result.summary(), args.out)
    return batch_exit_code(result, args.strict)
