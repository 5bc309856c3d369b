"""``bsi-d2 evaluate``: score predictions against a reference.

``--predictions`` is a COCO results file (RLE masks), scored against ``--gt`` COCO ground truth;
or a ``bsi-d2 predict`` / ``bsi-d2 bsi`` output folder, whose scans are scored against ``--gt``
(each scan's predictions.json, matched to the COCO images by file content) and/or against a
``--reference`` CSV of per-scan BSI, lesion count, burden group and abnormal (agreement.json,
agreement_pairs.csv and agreement.html in ``--out``). Scans the model did not assess are listed,
never scored as 0 or normal; keys matched on one side only are listed, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bsi_d2.commands._args import add_out_argument, add_taxonomy_argument
from bsi_d2.evaluation import evaluate_dataset, format_pixel_table, write_evaluation
from bsi_d2.evaluation.agreement import N_BOOTSTRAP
from bsi_d2.evaluation.coco_eval import GroundTruthError, load_ground_truth
from bsi_d2.evaluation.reference import (
    SCORES,
    STATUS_OK,
    match_images,
    not_assessed,
    read_reference_csv,
    reference_agreement,
    unmatched_record_entry,
)
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import TaxonomyError, load_taxonomy

HELP = "score predictions against COCO ground truth or a reference CSV"
logger = logging.getLogger(__name__)
AGREEMENT_FILE = "agreement.json"
PAIRS_FILE = "agreement_pairs.csv"
SHOWN = 5  # keys printed of each unmatched or not-assessed list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gt",
        type=Path,
        default=None,
        help="COCO instances JSON (ground truth); required with a results file",
    )
    parser.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="COCO results JSON (a list of {image_id, category_id, score, segmentation (RLE)}), "
        "or a predict / bsi output folder OUT (its scans/<key>/bsi.json records)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="REF.csv",
        help="per-scan reference values (with an output folder): a key column and any of bsi, "
        "lesion_count, burden_group, abnormal (1/0, true/false, yes/no); empty cells are missing",
    )
    parser.add_argument(
        "--reference-key",
        default=None,
        metavar="COLUMN",
        help="the reference's key column (default: the first of study_key, key, scan, file); "
        "its values name a scan's study_key or key",
    )
    parser.add_argument(
        "--keep-identity",
        action="store_true",
        help="also match by input file path, file name or stem (possible only when predict ran "
        "with --keep-identity, so the records name their files)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the --gt images' file_name are found, to match them to the scans by content "
        "(default: the COCO file's folder, then ../images beside it, as convert lays them out)",
    )
    parser.add_argument(
        "--abnormal-score",
        choices=SCORES,
        default="bsi",
        help="what ranks the scans for the AUC of abnormal (default: the predicted BSI)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=N_BOOTSTRAP,
        metavar="N",
        help=f"bootstrap resamples for the correlations' CIs (default {N_BOOTSTRAP})",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_taxonomy_argument(parser)
    add_out_argument(
        parser,
        "folder for evaluation.json etc. (--gt) and agreement.json, agreement_pairs.csv, "
        "agreement.html (--reference); default: print only",
        default=None,
    )
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        help="minimum score for pixel, Dice and scan metrics (AP uses all)",
    )
    parser.add_argument("--bbox", action="store_true", help="also report box AP")


def load_results(path: Path, images: dict[int, dict]) -> list[tuple[int, Instances]]:
    """COCO result records grouped into (image_id, Instances) on the ground truth's image sizes."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file: {err}") from err
    if not isinstance(records, list):
        raise ValueError(f"{path}: a COCO results file is a list of records")
    by_image: dict[int, list[dict]] = defaultdict(list)
    for i, rec in enumerate(records):
        missing = {"image_id", "category_id", "segmentation"} - set(rec)
        if missing:
            raise ValueError(f"{path}: record {i} lacks {sorted(missing)}")
        by_image[rec["image_id"]].append(rec)
    out = []
    for image_id, recs in by_image.items():
        if image_id not in images:
            logger.warning("%s: image id %r is not in the ground truth; ignored", path, image_id)
            continue
        img = images[image_id]
        out.append((image_id, Instances.from_coco(recs, img["height"], img["width"])))
    return out


def main(args: argparse.Namespace) -> int:
    try:
        if args.predictions.is_dir():
            return evaluate_folder(args)
        if args.gt is None:
            raise ValueError("--gt COCO.json is needed to score a COCO results file")
        if args.reference is not None:
            raise ValueError("--reference needs --predictions OUT, a predict output folder")
        taxonomy = load_taxonomy(args.taxonomy)
        gt, _ = load_ground_truth(args.gt)
        predictions = load_results(args.predictions, {img["id"]: img for img in gt["images"]})
        result = evaluate_dataset(
            gt,
            predictions,
            taxonomy,
            args.out,
            args.score_thresh,
            iou_types=("segm", "bbox") if args.bbox else ("segm",),
        )
    except (GroundTruthError, TaxonomyError, FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    print_evaluation(result)
    if args.out is not None:
        print(f"written to {args.out}")
    return 0


def print_evaluation(result: dict) -> None:
    print(format_pixel_table(result))
    segm = result["coco"]["segm"]
    print(f"mask AP {_fmt(segm['AP'])}  AP50 {_fmt(segm['AP50'])}")
    lesion, scan = result["lesion"], result["scan"]
    print(
        f"lesion Dice pooled {_fmt(lesion['dice_pooled'])}  "
        f"mean per image {_fmt(lesion['dice_mean_per_image'])}"
    )
    print(
        f"scans: sensitivity {_fmt(scan['sensitivity'])}  specificity "
        f"{_fmt(scan['specificity'])}  accuracy {_fmt(scan['accuracy'])}  AUC {_fmt(scan['auc'])}"
        f"  ({scan['n_pos']} positive, {scan['n_neg']} negative)"
    )
    burden = result["burden"]
    print(
        f"lesion count: mean absolute error {_fmt(burden['count_mean_absolute_error'])}  "
        f"mean error {_fmt(burden['count_mean_signed_error'])}  "
        f"exact {_fmt(burden['count_exact_agreement'])}; burden group agreement "
        f"{_fmt(burden['group_agreement'])}  kappa {_fmt(burden['group_kappa'])}"
        f"  ({burden['n']} scans)"
    )


# -- a predict output folder ------------------------------------------------------------------


def scans_folder(folder: Path) -> Path:
    """OUT/scans of a predict output folder OUT (or OUT/scans itself)."""
    from bsi_d2.inference.outputs import RECORD_FILE, SCANS_DIR

    for candidate in (folder / SCANS_DIR, folder):
        if any(candidate.glob(f"*/{RECORD_FILE}")):
            return candidate
    raise ValueError(
        f"{folder}: no {SCANS_DIR}/<key>/{RECORD_FILE}; is it a predict output folder?"
    )


def evaluate_folder(args: argparse.Namespace) -> int:
    """``--predictions OUT``: score OUT's scans against ``--gt`` and / or ``--reference``."""
    from bsi_d2.inference.outputs import read_records

    if args.gt is None and args.reference is None:
        raise ValueError(
            "with a predict output folder, give --gt COCO.json and/or --reference REF.csv"
        )
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap {args.bootstrap}: need 0 (none) or more resamples")
    scans_dir = scans_folder(args.predictions)
    table = None
    if args.reference is not None:  # read first: a bad CSV fails before any scoring
        table = read_reference_csv(args.reference, args.reference_key)
    records = read_records(scans_dir)
    if args.gt is not None:
        evaluation, results = score_ground_truth(args, scans_dir, records)
        print_evaluation(evaluation)
        lists = [
            ("COCO images without a scan", "unmatched_images"),
            ("scans without a COCO image", "unmatched_predictions"),
            ("COCO images of scans not assessed by the model", "not_assessed"),
        ]
        for line in list_lines(evaluation["predict_folder"], lists):
            print(line)
        if args.out is not None:
            write_evaluation(evaluation, results, args.out)
    if table is not None:
        agreement, rows = reference_agreement(
            table, records, args.keep_identity, args.abnormal_score, args.bootstrap, args.seed
        )
        agreement = {"inputs": _input_names(args), **agreement}
        print(format_agreement(agreement))
        if agreement["n_matched"] == 0:
            logger.warning("%s: no reference key matched a scan", args.reference)
        if args.out is not None:
            write_agreement(args.out, agreement, rows)
    if args.out is not None:
        print(f"written to {args.out}")
    return 0


def _input_names(args: argparse.Namespace) -> dict:
    # names only: a folder's path may carry a patient's name
    names = {"predictions": args.predictions.resolve().name}
    for what in ("reference", "gt"):
        path = getattr(args, what)
        names[what] = path.name if path is not None else None
    return names


def score_ground_truth(
    args: argparse.Namespace, scans_dir: Path, records: Sequence[dict]
) -> tuple[dict, list[dict]]:
    """evaluate_dataset on the COCO images matched to an assessed scan, each scan's
    predictions.json as its predictions; the matching in ``predict_folder``."""
    from bsi_d2.inference.outputs import PREDICTIONS_FILE, read_predictions

    taxonomy = load_taxonomy(args.taxonomy)
    gt, _ = load_ground_truth(args.gt)
    if args.images is not None:
        image_dirs = [args.images]
    else:
        image_dirs = [args.gt.parent, args.gt.parent.parent / "images"]
    match = match_images(gt["images"], image_dirs, records, args.keep_identity)
    predictions, unassessed = [], []
    for image, record in match.pairs:
        if record.get("status") != STATUS_OK:
            unassessed.append({"file_name": image.get("file_name"), **not_assessed([record])[0]})
            continue
        path = scans_dir / str(record["key"]) / PREDICTIONS_FILE
        if not path.is_file():
            raise ValueError(
                f"{path} not found: rerun predict with predictions among --outputs "
                "(e.g. --outputs all) to score it against --gt"
            )
        predictions.append((image["id"], read_predictions(path)))
    if not predictions:
        raise ValueError(
            f"{args.gt}: no image matches an assessed scan of {args.predictions} "
            f"({len(match.unmatched_images)} image(s) unmatched, {len(unassessed)} not assessed)"
        )
    scored = {image_id for image_id, _ in predictions}
    subset = {
        **gt,
        "images": [img for img in gt["images"] if img["id"] in scored],
        "annotations": [a for a in gt["annotations"] if a.get("image_id") in scored],
    }
    evaluation = evaluate_dataset(
        subset,
        predictions,
        taxonomy,
        None,
        args.score_thresh,
        iou_types=("segm", "bbox") if args.bbox else ("segm",),
    )
    evaluation["predict_folder"] = {
        "inputs": _input_names(args),
        "n_gt_images": len(gt["images"]),
        "n_scans": len(records),
        "n_scored": len(predictions),
        "unmatched_images": match.unmatched_images,
        "unmatched_predictions": [unmatched_record_entry(r) for r in match.unmatched_records],
        "not_assessed": unassessed,
    }
    results = [r for image_id, instances in predictions for r in instances.to_coco(image_id)]
    return evaluation, results


def write_agreement(out_dir: Path, agreement: dict, rows: Sequence[dict]) -> None:
    """agreement.json, agreement_pairs.csv and agreement.html in ``out_dir``."""
    from bsi_d2.io.files import atomic_write_text
    from bsi_d2.report.agreement import write_agreement_page

    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(agreement, indent=2, allow_nan=False) + "\n"
    atomic_write_text(out_dir / AGREEMENT_FILE, text)
    atomic_write_text(out_dir / PAIRS_FILE, pairs_csv(rows))
    write_agreement_page(out_dir, agreement, rows)


def pairs_csv(rows: Sequence[dict]) -> str:
    """agreement_pairs.csv: a row per matched scan; empty where there is no value, 1/0 for
    yes/no."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    else:
        buf.write("key,study_key,reference_key,status\n")
    return buf.getvalue()


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return value


def list_lines(section: dict, lists: Sequence[tuple[str, str]]) -> list[str]:
    """``(title, key)``: a line per non-empty list of ``section``, its count and first keys."""
    return [
        f"  {title} ({len(section[key])}): {_first(section[key])}"
        for title, key in lists
        if section.get(key)
    ]


def _first(entries: Sequence[dict]) -> str:
    def label(entry: dict) -> str:
        text = str(entry.get("key") or entry.get("file_name") or entry.get("id"))
        if entry.get("status") and entry.get("status") != STATUS_OK:
            text += f" ({entry['status']})"
        return text

    shown = ", ".join(label(e) for e in entries[:SHOWN])
    return shown + (f", ... and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


def format_agreement(agreement: dict) -> str:
    """A readable summary of ``agreement`` (reference_agreement's dict)."""
    inputs, settings = agreement.get("inputs") or {}, agreement["settings"]
    lines = [
        f"agreement with {inputs.get('reference')} (key column {settings['key_column']}): "
        f"{agreement['n_reference']} reference row(s), {agreement['n_scans']} scan(s), "
        f"{agreement['n_matched']} matched, {agreement['n_assessed']} assessed by the model"
    ]
    lists = [
        ("not assessed by the model", "not_assessed"),
        ("reference keys without a scan", "unmatched_reference"),
        ("scans without a reference row", "unmatched_predictions"),
    ]
    lines += list_lines(agreement, lists)
    bsi = agreement.get("bsi")
    if bsi:
        corr, icc, ba = bsi["correlation"], bsi["icc"], bsi["bland_altman"]
        lines.append(
            f"BSI ({bsi['n']} pairs): Pearson r {_ci(corr, 'pearson_r', 'pearson_fisher')}, "
            f"Spearman rho {_ci(corr, 'spearman_rho', 'spearman_bootstrap')}, "
            f"ICC(2,1) {_ci(icc, 'icc2_1')}, ICC(3,1) {_ci(icc, 'icc3_1')}"
        )
        lines.append(
            f"  Bland-Altman: bias {_ci(ba, 'bias')}, limits {_ci(ba, 'loa_lower')} and "
            f"{_ci(ba, 'loa_upper')}; proportional bias slope {_ci(ba, 'slope')} "
            f"(p {_fmt(ba['slope_p'])})"
        )
    counts = agreement.get("lesion_count")
    if counts:
        lines.append(
            f"lesion count ({counts['n']} pairs): mean absolute error "
            f"{_fmt(counts['mean_absolute_error'])}, mean error "
            f"{_fmt(counts['mean_signed_error'])}, exact {_fmt(counts['exact_agreement'])}, "
            f"Spearman rho {_ci(counts, 'spearman_rho', 'spearman_bootstrap')}, "
            f"ICC(2,1) {_ci(counts, 'icc2_1')}"
        )
    groups = agreement.get("burden_group")
    if groups:
        lines.append(
            f"burden group ({groups['n']} pairs): agreement {_fmt(groups['agreement'])}, "
            f"Cohen's kappa {_ci(groups, 'kappa')}"
        )
    abnormal = agreement.get("abnormal")
    if abnormal:
        lines.append(
            f"abnormal ({abnormal['n']} pairs): sensitivity {_ci(abnormal, 'sensitivity')}, "
            f"specificity {_ci(abnormal, 'specificity')}, AUC {_ci(abnormal, 'auc')} "
            f"(ranked by {settings['abnormal_score']}, {abnormal['auc_n']} scans)"
        )
    level = f"{100 * settings['confidence']:g} %"
    lines.append(f"[{level} CIs; an aid for a physician, not a diagnosis]")
    return "\n".join(lines)


def _ci(section: dict, name: str, ci: str | None = None) -> str:
    low, high = section.get(f"{ci or name}_ci_low"), section.get(f"{ci or name}_ci_high")
    value = _fmt(section.get(name))
    if low is None or high is None:
        return value
    return f"{value} [{_fmt(low)}, {_fmt(high)}]"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
