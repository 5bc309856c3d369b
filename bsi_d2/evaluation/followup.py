"""A follow-up (``bsi-d2 followup``'s ``followup.json``) scored against phantom truth: the
reported change in BSI against the true change, and the new and no-longer-seen lesions against
the lesions the truth says appeared or resolved between the two studies.

The truth of a study is a phantom truth JSON (``bsi-d2 phantom --follow-up K``): its
``study_key`` links it to the follow-up's studies, its ``lesions`` carry each drawn metastasis's
``lesion_id`` (the same id in every study of the patient) and centre per view. A reported lesion
is the truth lesion whose centre lies nearest its centroid in a view both show, within
``radius`` pixels; a reported new lesion is right when that lesion was not in the earlier
study's truth, a reported resolved lesion when it is not in the later one. Dicts in, dicts out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bsi_d2.evaluation.agreement import continuous_agreement, count_agreement

DEFAULT_TRUTH_RADIUS = 10.0  # pixels from a reported lesion's centroid to the truth's centre


def read_truths(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Phantom truth JSONs under ``folder`` (a phantom folder or its ``truth/``) by study key."""
    folder = Path(folder)
    root = folder / "truth" if (folder / "truth").is_dir() else folder
    truths: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*.json")):
        try:
            truth = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable truth JSON: {err}") from err
        key = truth.get("study_key") if isinstance(truth, dict) else None
        if key:
            truths[str(key)] = truth
    if not truths:
        raise ValueError(
            f"{folder}: no truth JSON with a study_key (write the phantoms with --follow-up)"
        )
    return truths


def truth_lesion_of(
    lesion: Mapping[str, Any], truth: Mapping[str, Any], radius: float = DEFAULT_TRUTH_RADIUS
) -> int | None:
    """The ``lesion_id`` of the truth lesion nearest a reported lesion's centroid, or None."""
    best, best_distance = None, radius
    for view, (x, y) in (lesion.get("centroid") or {}).items():
        for candidate in truth.get("lesions", []):
            centre = (candidate.get("center_merged") or {}).get(view)
            if centre is None:
                continue
            distance = math.hypot(x - centre[0], y - centre[1])
            if distance <= best_distance:
                best, best_distance = int(candidate["lesion_id"]), distance
    return best


def _ids(truth: Mapping[str, Any]) -> set[int]:
    return {int(les["lesion_id"]) for les in truth.get("lesions", [])}


def _detection(reported: Sequence[int | None], true_ids: set[int]) -> dict[str, Any]:
    hits = {i for i in reported if i is not None and i in true_ids}
    found = sum(1 for i in reported if i is not None and i in true_ids)
    return {
        "true": len(true_ids),
        "reported": len(reported),
        "reported_right": found,
        "true_found": len(hits),
        "precision": found / len(reported) if reported else None,
        "recall": len(hits) / len(true_ids) if true_ids else None,
    }


def score_pair(
    pair: Mapping[str, Any],
    earlier: Mapping[str, Any],
    later: Mapping[str, Any],
    radius: float = DEFAULT_TRUTH_RADIUS,
) -> dict[str, Any]:
    """One assessable pair against the truths of its two studies."""
    before, after = _ids(earlier), _ids(later)
    lesions = pair.get("lesions") or {}
    new = [truth_lesion_of(les, later, radius) for les in lesions.get("new", [])]
    resolved = [truth_lesion_of(les, earlier, radius) for les in lesions.get("resolved", [])]
    return {
        "earlier_study_key": pair["earlier"]["study_key"],
        "later_study_key": pair["later"]["study_key"],
        "span": pair.get("span"),
        "delta_bsi": (pair.get("bsi") or {}).get("change"),
        "true_delta_bsi": float(later["bsi"]) - float(earlier["bsi"]),
        "true_delta_reference_bsi": float(later["reference"]["bsi"])
        - float(earlier["reference"]["bsi"]),
        "delta_lesion_count": (pair.get("lesion_count") or {}).get("change"),
        "true_delta_lesion_count": int(later["lesion_count"]) - int(earlier["lesion_count"]),
        "new": _detection(new, after - before),
        "resolved": _detection(resolved, before - after),
        "persistent": {"true": len(before & after), "reported": len(lesions.get("persistent", []))},
    }


def score_followup(
    document: Mapping[str, Any],
    truths: Mapping[str, Mapping[str, Any]],
    radius: float = DEFAULT_TRUTH_RADIUS,
) -> dict[str, Any]:
    """Every pair of a ``followup.json`` document against the truths (by study key): ΔBSI
    agreement with the truth's image-space and geometric ΔBSI, lesion-count change agreement,
    and new/resolved lesion detection summed over pairs. Pairs without a truth for both studies
    and pairs that were not assessable are counted and listed, not scored."""
    scored: list[dict[str, Any]] = []
    without_truth: list[list[str]] = []
    not_assessable: list[list[str]] = []
    for patient in document.get("patients", []):
        for pair in patient.get("pairs", []):
            keys = [pair["earlier"].get("study_key"), pair["later"].get("study_key")]
            if not all(k in truths for k in keys):
                without_truth.append(keys)
            elif not pair.get("assessable"):
                not_assessable.append(keys)
            else:
                scored.append(score_pair(pair, truths[keys[0]], truths[keys[1]], radius))
    out: dict[str, Any] = {
        "pairs_scored": len(scored),
        "pairs_without_truth": without_truth,
        "pairs_not_assessable": not_assessable,
        "radius_px": radius,
    }
    for span in sorted({s["span"] for s in scored}) + [None]:
        rows = [s for s in scored if span is None or s["span"] == span]
        name = "all" if span is None else str(span).replace(" ", "_")
        out[name] = _summary(rows)
    out["pairs"] = scored
    return out


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    delta = [r["delta_bsi"] for r in rows]
    summary: dict[str, Any] = {
        "n": len(rows),
        "delta_bsi_vs_truth": continuous_agreement(delta, [r["true_delta_bsi"] for r in rows]),
        "delta_bsi_vs_reference": continuous_agreement(
            delta, [r["true_delta_reference_bsi"] for r in rows]
        ),
        "delta_lesion_count": count_agreement(
            [r["delta_lesion_count"] for r in rows], [r["true_delta_lesion_count"] for r in rows]
        ),
    }
    for fate in ("new", "resolved"):
        total = {
            k: sum(r[fate][k] for r in rows)
            for k in ("true", "reported", "reported_right", "true_found")
        }
        total["precision"] = (
            total["reported_right"] / total["reported"] if total["reported"] else None
        )
        total["recall"] = total["true_found"] / total["true"] if total["true"] else None
        summary[fate] = total
    summary["persistent"] = {k: sum(r["persistent"][k] for r in rows) for k in ("true", "reported")}
    return summary
