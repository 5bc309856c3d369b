"""``bsi-d2 followup``: compare each patient's studies across ``predict`` / ``bsi`` output
folders: BSI and BSTBI changes, new and no longer seen lesions, per-patient pages."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bsi_d2.commands._args import add_out_argument, add_salt_argument

HELP = "follow-up across studies of one patient: BSI change, new and resolved lesions"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsi_d2.followup.align import TRANSFORMS
    from bsi_d2.followup.match import DEFAULT_FOLLOWUP_RADIUS

    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        metavar="RESULTS_DIR",
        help="output folders of bsi-d2 predict or bsi (a study in two of them must have the "
        "same record in both)",
    )
    add_out_argument(parser, "folder for followup_pairs.csv, followup.json and the pages")
    parser.add_argument(
        "--studies",
        type=Path,
        default=None,
        metavar="MAP.csv",
        help="CSV with columns key (a scan's key or study key), patient, date (YYYY-MM-DD or "
        "YYYY-MM): links scans without a patient pseudonym or date; overrides the records'",
    )
    add_salt_argument(parser)
    parser.add_argument(
        "--match-radius",
        type=float,
        default=DEFAULT_FOLLOWUP_RADIUS,
        help=f"pixels within which two studies' lesions can be one (default "
        f"{DEFAULT_FOLLOWUP_RADIUS:g})",
    )
    parser.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default="similarity",
        help="skeleton alignment between studies (default similarity; a translation where "
        "too few regions are found in both)",
    )
    parser.add_argument(
        "--progression-delta-bsi",
        type=float,
        default=None,
        metavar="X",
        help="suggest 'progression' for a BSI rise of X percentage points or more (and "
        "'decrease' for a fall as large); default: no category, only the values",
    )
    parser.add_argument(
        "--new-lesions",
        type=int,
        default=None,
        metavar="N",
        help="suggest 'progression' for N or more new lesions; default: no category",
    )
    parser.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="PHANTOM_DIR",
        help="phantom folder written with --follow-up: score the reported changes against its "
        "truth (OUT/truth_agreement.json: delta BSI agreement, new and resolved lesions found)",
    )


def main(args: argparse.Namespace) -> int:
    from bsi_d2.followup import FollowupError, FollowupOptions, build_studies, follow_up
    from bsi_d2.followup.compare import read_studies_map, results_records
    from bsi_d2.followup.report import write_followup
    from bsi_d2.io.files import OutputDirError, check_output_dir

    if args.match_radius <= 0:
        logger.error("--match-radius must be positive, not %g", args.match_radius)
        return 2
    if args.new_lesions is not None and args.new_lesions < 1:
        logger.error("--new-lesions must be 1 or more, not %d", args.new_lesions)
        return 2
    if args.progression_delta_bsi is not None and args.progression_delta_bsi <= 0:
        logger.error("--progression-delta-bsi must be positive, not %g", args.progression_delta_bsi)
        return 2
    try:
        records = [item for folder in args.results for item in results_records(folder)]
        studies_map = read_studies_map(args.studies, args.salt) if args.studies else None
        check_output_dir(args.out)
    except (FollowupError, OutputDirError) as err:
        logger.error("%s", err)
        return 2
    studies = build_studies(records, studies_map)
    if studies_map:
        known = {str(s.record.get(k)) for s in studies for k in ("key", "study_key")}
        unused = sorted(set(studies_map) - known)
        if unused:
            shown = ", ".join(unused[:10]) + (" ..." if len(unused) > 10 else "")
            logger.warning("%d key(s) of the studies map match no record: %s", len(unused), shown)
    options = FollowupOptions(
        radius=args.match_radius,
        transform=args.transform,
        delta_bsi=args.progression_delta_bsi,
        new_lesions=args.new_lesions,
    )
    result = follow_up(studies, options)
    write_followup(args.out, result)
    if args.truth is not None:
        try:
            print(truth_summary(args.out, args.truth))
        except ValueError as err:
            logger.error("%s", err)
            return 2
    pairs = sum(len(p.pairs) for p in result.patients)
    for patient in result.patients:
        for error in patient.errors:
            logger.warning("patient %s not compared: %s", patient.patient_key, error)
    logger.info(
        "%d patient(s), %d pair(s) compared, %d patient(s) not compared, %d scan(s) not linked; "
        "outputs in %s",
        len(result.patients),
        pairs,
        sum(1 for p in result.patients if p.errors),
        len(result.not_linked),
        args.out,
    )
    return 0


def truth_summary(out: Path, truth_dir: Path) -> str:
    """Score ``out/followup.json`` against the phantom truth, write ``truth_agreement.json`` and
    say in a few lines how the reported changes compare."""
    import json

    from bsi_d2.evaluation.followup import read_truths, score_followup
    from bsi_d2.io.files import atomic_write_text

    document = json.loads((out / "followup.json").read_text(encoding="utf-8"))
    score = score_followup(document, read_truths(truth_dir))
    atomic_write_text(out / "truth_agreement.json", json.dumps(score, indent=1) + "\n")
    lines = [f"against the phantom truth ({score['pairs_scored']} pairs scored, "
             f"{len(score['pairs_without_truth'])} without truth, "
             f"{len(score['pairs_not_assessable'])} not assessable):"]  # fmt: skip
    for span in ("consecutive", "baseline_to_latest"):
        part = score.get(span, {})
        if not part.get("n"):
            continue
        image = part["delta_bsi_vs_truth"]
        geometric = part["delta_bsi_vs_reference"]
        lines.append(
            f"  {span.replace('_', ' ')} ({part['n']} pairs): delta BSI r "
            f"{_num(image['correlation']['pearson_r'])}, bias "
            f"{_num(image['bland_altman']['bias'])} (image-space truth); r "
            f"{_num(geometric['correlation']['pearson_r'])}, bias "
            f"{_num(geometric['bland_altman']['bias'])} (geometric reference); new lesions "
            f"{_found(part['new'])}; no longer seen {_found(part['resolved'])}"
        )
    lines.append(f"written to {out / 'truth_agreement.json'}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _found(counts: dict) -> str:
    return (
        f"{counts['true_found']} of {counts['true']} found, {counts['reported_right']} of "
        f"{counts['reported']} reported right"
    )
