"""``bsi-d2 preprocess IN... --out OUT``: DICOM, images -> merged 950 x 512 scans, one per study."""

from __future__ import annotations

import argparse
import logging

from bsi_d2.commands._args import (
    add_cut_below_knee_argument,
    add_keep_dates_argument,
    add_out_argument,
    add_progress_argument,
    add_recursive_argument,
    add_salt_argument,
)
from bsi_d2.io.limits import add_limit_arguments, limits_from

HELP = "DICOM/images -> merged 950 x 512 scans"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read whole-body bone scans (DICOM, PNG/TIFF, Labelme JSON; folders recursively) and "
        "write per study OUT/<key>.png (8-bit display), OUT/<key>.counts.png (16-bit counts), "
        "OUT/<key>.meta.json and OUT/preprocess_report.json. <key> is a salted hash of the "
        "study, patient_key one of the patient (PatientID and its issuer); no patient name, ID, "
        "birth date or study date is written unless --keep-identity (a date's month or shifted "
        "day with --keep-dates), and input files are named by salted pseudonyms of their folder "
        "and file names plus a content digest, since archives are often laid out by patient. "
        "predict on OUT's PNGs writes the study_key and patient_key of the DICOM they came from."
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="DICOM/image files or folders")
    add_out_argument(
        parser,
        "output folder",
        deprecated_positional="inputs",
    )
    add_salt_argument(parser)
    parser.add_argument(
        "--keep-identity",
        action="store_true",
        help="also write patient identity (and the exact study date, unless --keep-dates says "
        "otherwise) into the metadata, and name input files by their paths in the metadata, "
        "the report and the log",
    )
    add_keep_dates_argument(parser)
    parser.add_argument(
        "--labelme", action="store_true", help="write an empty Labelme JSON per scan to annotate"
    )
    add_cut_below_knee_argument(parser)
    add_recursive_argument(parser)
    add_progress_argument(parser)
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when any input was skipped as broken"
    )
    add_limit_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from bsi_d2.io.files import OutputDirError, check_output_dir
    from bsi_d2.preprocess.pipeline import REPORT_NAME, preprocess_paths

    try:
        check_output_dir(args.out)
    except OutputDirError as err:
        logger.error("%s", err)
        return 2
    summary = preprocess_paths(
        args.inputs,
        args.out,
        recursive=args.recursive,
        salt=args.salt,
        keep_identity=args.keep_identity,
        labelme=args.labelme,
        cut_below_knee=args.cut_below_knee,
        progress=args.progress,
        limits=limits_from(None, args.max_file_mb, args.max_frame_pixels, args.max_frames),
        keep_dates=args.keep_dates,
    )
    counts = summary.counts
    kinds = ", ".join(
        f"{k}: {v}" for k, v in counts.items() if k not in ("scans_written", "skipped")
    )
    skipped = f"skipped {counts['skipped']}" + (f" ({kinds})" if kinds else "")
    print(f"wrote {counts['scans_written']} scan(s) to {args.out}; {skipped}")
    for entry in summary.skipped:
        print(f"  skipped [{entry['kind']}] {entry['reason']}")
    print(f"report: {args.out}/{REPORT_NAME}")
    if not summary.written:
        return 1
    broken = [e for e in summary.skipped if e.get("kind") == "error"]
    return 1 if args.strict and broken else 0
