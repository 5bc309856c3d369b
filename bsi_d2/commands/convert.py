"""``bsi-d2 convert SRC --out OUT``: a folder of Labelme JSON -> COCO instances per split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bsi_d2.commands._args import add_out_argument, add_taxonomy_argument, add_workers_argument

HELP = "Labelme JSON folder -> COCO instances per split"

logger = logging.getLogger(__name__)


EXIT_STATUS = (
    "exit status: 0 converted; 1 no file could be converted, or --strict and any input was bad; "
    "2 unusable options, or no Labelme file in SRC (nothing written)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXIT_STATUS
    parser.add_argument(
        "src", type=Path, help="folder of Labelme JSON files (searched recursively)"
    )
    add_out_argument(
        parser,
        "output folder: images/, annotations/, the report",
        deprecated_positional="own",
    )
    add_taxonomy_argument(parser)
    parser.add_argument(
        "--split",
        type=_ratios,
        default=(0.8, 0.1, 0.1),
        metavar="TR,VA,TE",
        help="train,val,test ratios of the fixed split (default 0.8,0.1,0.1)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="also write N k-fold splits (fold k: test chunk k, val chunk k+1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split shuffles")
    parser.add_argument(
        "--stratify",
        choices=["none", "lesion"],
        default="none",
        help="spread scans with lesions evenly over splits and folds",
    )
    parser.add_argument(
        "--group-by",
        choices=["none", "patient"],
        default="none",
        help="keep each patient's scans in one split and fold (patient_key of each file's "
        "<stem>.meta.json from preprocess, or --groups)",
    )
    parser.add_argument(
        "--groups",
        type=Path,
        metavar="MAP.csv",
        help="CSV with columns file,group (file: a Labelme file's stem or path relative to SRC) "
        "giving each file's patient; implies --group-by patient",
    )
    parser.add_argument(
        "--ignore",
        choices=["crowd", "drop"],
        default="crowd",
        help="ignore-label shapes -> iscrowd RLE regions, or drop them",
    )
    parser.add_argument(
        "--unknown-labels",
        choices=["error", "skip"],
        default="error",
        help="labels not in the taxonomy: errors, or skipped (both listed in the report)",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        type=_mapping,
        help="rename a label before lookup (repeatable)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit non-zero if any input was bad (still writes what it could)",
    )
    add_workers_argument(parser)


def _ratios(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(":", ",").replace("/", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--split {text!r}: not numbers") from err
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--split {text!r}: give three ratios, e.g. 0.8,0.1,0.1")
    return values  # type: ignore[return-value]


def _mapping(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old.strip() or not new.strip():
        raise argparse.ArgumentTypeError(f"--map {text!r}: expected OLD=NEW")
    return old.strip(), new.strip()


def main(args: argparse.Namespace) -> int:
    from bsi_d2.data.convert import REPORT_NAME, convert_labelme_folder
    from bsi_d2.taxonomy import TaxonomyError

    try:
        report = convert_labelme_folder(
            args.src,
            args.out,
            taxonomy=args.taxonomy,
            split=args.split,
            folds=args.folds,
            seed=args.seed,
            stratify=None if args.stratify == "none" else args.stratify,
            ignore=args.ignore,
            unknown_labels=args.unknown_labels,
            label_map=dict(args.map),
            strict=args.strict,
            workers=args.workers,
            group_by=None if args.group_by == "none" else args.group_by,
            groups=args.groups,
        )
    except (TaxonomyError, ValueError) as err:
        logger.error("%s", err)
        return 2
    print(report.summary())
    print(f"report: {args.out / REPORT_NAME}")
    return report.exit_code
