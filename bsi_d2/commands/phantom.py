"""``bsi-d2 phantom --scans N --out DIR [--follow-up K]``: synthetic whole-body bone scans, exact
ground truth, and later studies of the same patients."""

from __future__ import annotations

import argparse
import json
import logging

from bsi_d2.commands._args import (
    add_deprecated_alias,
    add_difficulty_argument,
    add_out_argument,
    add_taxonomy_argument,
    add_workers_argument,
)

HELP = "make synthetic whole-body bone scans with ground truth"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scans = parser.add_argument(
        "--scans", type=int, default=200, metavar="N", help="number of patients (default 200)"
    )
    add_deprecated_alias(parser, "--n", scans)
    add_out_argument(parser, "output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed; patient i depends on (seed, i)")
    add_workers_argument(parser)
    parser.add_argument(
        "--one-view-per-file",
        action="store_true",
        help="write <id>_ANT.dcm and <id>_POST.dcm (GE style) instead of one two-frame file",
    )
    add_difficulty_argument(parser)
    parser.add_argument(
        "--follow-up",
        type=int,
        default=0,
        metavar="K",
        help="also write K later studies of each patient, <id>_v1 .. <id>_vK: the same body and "
        "identity, a new acquisition and study date, lesions grown, shrunk, stable, resolved "
        "or new (truth/<id>_vK.json says which), and a labelme/<id>.meta.json study link for "
        "every study (default 0)",
    )
    parser.add_argument(
        "--annotator-noise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="jitter the drawn outlines and leave some faint lesions unlabelled, as real "
        "annotators do (default: as the preset says; the truth files keep what was drawn)",
    )
    add_taxonomy_argument(parser)
    parser.add_argument(
        "--label-benign",
        action="store_true",
        help="label the benign look-alikes (injection site, degenerative joints, fractures, "
        "urine, catheters...) as instances of the taxonomy's 'benign' decoy class instead of "
        "leaving them unlabelled; needs a taxonomy with that class (default with this flag: "
        "the built-in 'benign'). The images stay the same",
    )


def main(args: argparse.Namespace) -> int:
    from bsi_d2.phantom import write_phantoms

    if args.scans < 0:
        logger.error("--scans must be >= 0, got %d", args.scans)
        return 2
    if args.follow_up < 0:
        logger.error("--follow-up must be >= 0, got %d", args.follow_up)
        return 2
    if args.label_benign:
        from bsi_d2.phantom.generate import require_benign_class
        from bsi_d2.taxonomy import BENIGN_NAME, load_taxonomy

        try:
            require_benign_class(load_taxonomy(args.taxonomy or BENIGN_NAME))
        except ValueError as err:  # TaxonomyError too: a missing or broken file
            logger.error("--label-benign: %s", err)
            return 2
    write_phantoms(
        args.out,
        args.scans,
        seed=args.seed,
        workers=args.workers,
        one_view_per_file=args.one_view_per_file,
        difficulty=args.difficulty,
        annotator_noise=args.annotator_noise,
        follow_up=args.follow_up,
        taxonomy=args.taxonomy,
        label_benign=args.label_benign,
    )
    manifest = json.loads((args.out / "manifest.json").read_text(encoding="utf-8"))
    summary = manifest["summary"]
    print(
        f"wrote {len(manifest['ids'])} of {args.scans} phantoms to {args.out} "
        f"({summary['patients_without_lesion']} without lesion, lesions per patient "
        f"{summary['lesions_min']}-{summary['lesions_max']}, "
        f"{summary['low_count_scans']} low-count, difficulty {manifest['difficulty']}); "
        "synthetic data, not for diagnosis"
    )
    if args.follow_up:
        later = summary["follow_ups"]
        fates = ", ".join(f"{n} {fate}" for fate, n in later["lesion_fates"].items())
        print(
            f"  {later['studies']} follow-up studies ({args.follow_up} per patient), lesions "
            f"{fates}; study links in labelme/<id>.meta.json, keys and truth in reference.csv"
        )
    for failure in manifest["failed"]:
        print(f"  failed: {failure['patient']}: {failure['error']}")
    return 1 if manifest["failed"] else 0
