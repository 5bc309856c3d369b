"""A folder of synthetic patients on disk (:func:`write_phantoms`, ``bsi-d2 phantom``): each
patient's files (:func:`~bsi_d2.phantom.generate.write_phantom`), its follow-up studies
(:mod:`bsi_d2.phantom.followup`), ``manifest.json`` and ``reference.csv``."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bsi_d2.phantom.dicom_writer import study_link
from bsi_d2.phantom.followup import follow_up_series, summarise_follow_ups
from bsi_d2.phantom.generate import PATTERNS, Phantom, generate_phantom, patient_id, write_phantom
from bsi_d2.phantom.presets import Difficulty, get_difficulty
from bsi_d2.taxonomy import BENIGN_NAME, Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)


def _generate_and_write(task: tuple) -> tuple[int, list[dict], dict | None]:
    """One patient's studies written: (index, one entry per study, the failure or None)."""
    index, seed, out, one_view, difficulty, noise, follow_up, taxonomy, label_benign = task
    try:
        phantom = generate_phantom(
            index,
            seed,
            taxonomy=taxonomy,
            difficulty=difficulty,
            annotator_noise=noise,
            label_benign=label_benign,
        )
        studies = [phantom]
        if follow_up:
            studies = follow_up_series(phantom, follow_up)
        written = [
            {
                "visit": s.visit,
                "path": str(write_phantom(s, out, one_view, link=follow_up > 0)),
                "summary": _study_summary(s),
                "reference": _reference_row(s),
            }
            for s in studies
        ]
    except Exception as err:  # one broken patient must not stop the batch; it is recorded
        logger.exception("%s: generation failed", patient_id(index))
        return index, [], {"patient": patient_id(index), "error": f"{type(err).__name__}: {err}"}
    return index, written, None


def _study_summary(phantom: Phantom) -> dict:
    summary = {
        "patient": phantom.patient,
        "lesion_count": phantom.truth["lesion_count"],
        "bsi": phantom.truth["bsi"],
        "arm_pose": phantom.parameters["arm_pose"],
        "low_count": phantom.parameters["low_count"],
        "reference_bsi": phantom.truth["reference"]["bsi"],
        "pattern": phantom.truth["disease_pattern"],
    }
    if phantom.visit:
        block = phantom.truth["follow_up"]
        summary.update(
            {k: block[k] for k in ("visit", "trend", "lesion_fates", "delta_bsi")},
            baseline=block["patient"],
        )
    return summary


REFERENCE_FILE = "reference.csv"
REFERENCE_COLUMNS = (
    "study_key",
    "patient_key",
    "patient",
    "visit",
    "bsi",
    "reference_bsi",
    "lesion_count",
    "burden_group",
    "abnormal",
    "study",
)


def _reference_row(phantom: Phantom) -> dict:
    """One study's row of ``reference.csv``: its keys as a reader derives them, and its truth."""
    link = study_link(phantom.identity)
    truth = phantom.truth
    return {
        "study_key": link["study_key"],
        "patient_key": link["patient_key"],
        "patient": patient_id(phantom.index),
        "visit": phantom.visit,
        "bsi": truth["bsi"],
        "reference_bsi": truth["reference"]["bsi"],
        "lesion_count": truth["lesion_count"],
        "burden_group": truth["burden_group"],
        "abnormal": int(truth["lesion_count"] > 0),
        "study": phantom.patient,
    }


def write_reference(path: str | Path, rows: list[dict]) -> Path:
    """``reference.csv``: one row per study (:data:`REFERENCE_COLUMNS`), for validation."""
    import csv

    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REFERENCE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; nested threads only contend


def write_phantoms(
    out: str | Path,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    one_view_per_file: bool = False,
    difficulty: str | Difficulty | None = None,
    annotator_noise: bool | None = None,
    follow_up: int = 0,
    taxonomy: Taxonomy | str | None = None,
    label_benign: bool = False,
) -> list[Path]:
    """Write patients ``0 .. n-1`` of ``seed`` under ``out``, a ``manifest.json`` and a
    ``reference.csv`` (one row per study); ``difficulty`` and ``annotator_noise`` as in
    :func:`generate_phantom`. ``follow_up`` K > 0 adds K later studies of each patient,
    ``<id>_v1`` .. ``<id>_vK`` (:mod:`bsi_d2.phantom.followup`), and a ``labelme/<id>.meta.json``
    study link for every study. ``taxonomy`` names the classes the labels use (default: the
    built-in one); ``label_benign`` labels the benign look-alikes as its ``benign`` decoy class
    (ValueError, before anything is written, if it has none; with ``label_benign`` and no
    ``taxonomy``, the built-in ``benign`` taxonomy).

    Returns the truth JSON path of every study written, patient by patient, each patient's
    baseline first. A patient that fails is logged and listed under ``failed`` in the manifest;
    the others are still written.
    """
    from bsi_d2 import __version__

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if follow_up < 0:
        raise ValueError(f"follow_up must be >= 0, got {follow_up}")
    if label_benign:
        from bsi_d2.phantom.generate import require_benign_class

        taxonomy = load_taxonomy(BENIGN_NAME if taxonomy is None else taxonomy)
        require_benign_class(taxonomy)
    elif taxonomy is not None:
        taxonomy = load_taxonomy(taxonomy)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = min(os.cpu_count() or 1, n) if workers is None else max(1, int(workers))
    preset = get_difficulty(difficulty, annotator_noise)
    tasks = [
        (
            i,
            int(seed),
            str(out),
            bool(one_view_per_file),
            preset,
            annotator_noise,
            int(follow_up),
            taxonomy,
            bool(label_benign),
        )
        for i in range(n)
    ]
    if workers <= 1 or n <= 1:
        _init_worker()
        results = [_generate_and_write(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            results = list(
                pool.map(_generate_and_write, tasks, chunksize=max(1, n // (4 * workers)))
            )
    studies = [s for _, written, _ in sorted(results, key=lambda r: r[0]) for s in written]
    ok = [s["summary"] for s in studies if s["visit"] == 0]
    later = [s["summary"] for s in studies if s["visit"] > 0]
    failed = [f for _, _, f in results if f is not None]
    counts = [s["lesion_count"] for s in ok]
    manifest = {
        "software": "bsi_d2",
        "version": __version__,
        "generator": "bsi_d2.phantom",
        "seed": int(seed),
        "n": int(n),
        "difficulty": preset.name,
        "preset": preset.to_dict(),
        "ids": [s["patient"] for s in ok],
        "follow_up": int(follow_up),
        "follow_up_ids": [s["patient"] for s in later],
        "layout": {
            "dicom": "dicom/<id>_ANT.dcm, dicom/<id>_POST.dcm"
            if one_view_per_file
            else "dicom/<id>.dcm (frame 1 anterior, frame 2 posterior)",
            "image": "labelme/<id>.png (8-bit display), labelme/<id>.counts.png (16-bit counts)",
            "labelme": "labelme/<id>.json",
            "truth": "truth/<id>.json",
            "reference": f"{REFERENCE_FILE} (one row per study: keys and truth)",
            **(
                {
                    "follow_ups": "<id>_v<visit> for visits 1..K, written as any patient",
                    "meta": "labelme/<id>.meta.json (study key, patient key, shifted date)",
                }
                if follow_up
                else {}
            ),
        },
        "kidney_instances": "one kidney instance per kidney per view",
        "bladder_instances": "one bladder instance per view (a decoy, category bladder, id 12 in "
        "the default taxonomy); its mask may overlap the pelvis region, region masks never overlap",
        "summary": {
            "patients_without_lesion": sum(1 for c in counts if c == 0),
            "lesions_min": min(counts, default=0),
            "lesions_max": max(counts, default=0),
            "low_count_scans": sum(1 for s in ok if s["low_count"]),
            "bsi_max": max((s["bsi"] for s in ok), default=0.0),
            "reference_bsi_max": max((s["reference_bsi"] for s in ok), default=0.0),
            "patterns": {p: sum(1 for s in ok if s["pattern"] == p) for p in PATTERNS},
            "arm_poses": {
                p: sum(1 for s in ok if s["arm_pose"] == p) for p in ("down", "away", "crossed")
            },
            **({"follow_ups": summarise_follow_ups(later)} if follow_up else {}),
        },
        "patients": ok,
        "follow_ups": later,
        "failed": failed,
        "note": "Synthetic data with made-up identities; not for diagnosis.",
    }
    if label_benign:  # only then: the default manifest stays byte for byte what it was
        benign = taxonomy.benign_class
        manifest["taxonomy"] = taxonomy.name
        manifest["benign_instances"] = (
            f"the benign look-alikes (all but the bladder), category {benign.name}, id "
            f"{benign.id}: one instance per connected piece per view where a reader sees it, "
            "kept clear of lesions and other decoys; the truth's lookalikes list their kinds"
        )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    write_reference(out / REFERENCE_FILE, [s["reference"] for s in studies])
    if failed:
        logger.warning("%d of %d phantoms failed; see %s", len(failed), n, out / "manifest.json")
    return [Path(s["path"]) for s in studies]
