"""One synthetic patient in memory (:func:`generate_phantom`) and a folder of them on disk
(:func:`write_phantoms`).

Patient ``i`` of seed ``s`` draws everything from ``SeedSequence([s, i])``, so a patient is the
same whatever ``n`` or the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from bsi_d2.phantom.anatomy import (
    PIXEL_SPACING_MM,
    VIEW_SHAPE,
    Anatomy,
    build_anatomy,
    mirror,
    sample_body,
)
from bsi_d2.phantom.dicom_writer import SyntheticIdentity, write_one_view, write_two_frame
from bsi_d2.phantom.lesions import (
    HotSpot,
    Metastasis,
    sample_hot_spots,
    sample_lesion_count,
    sample_metastases,
)
from bsi_d2.phantom.render import expected_counts, paint, poisson_counts, texture
from bsi_d2.phantom.truth import (
    LabeledInstance,
    build_truth,
    labelme_shapes,
    make_disjoint,
    polygon_points,
    to_merged,
)
from bsi_d2.preprocess.merge import MergedScan, merge_views
from bsi_d2.taxonomy import VIEWS, Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

LOW_COUNT_FRACTION = 0.15
ID_FORMAT = "phantom_{:04d}"
OUTLINE_TOLERANCE_PX = 0.4


@dataclass
class Phantom:
    """One synthetic patient: count views, the merged scan, Labelme shapes and the truth."""

    patient: str
    index: int
    seed: int
    anterior: np.ndarray  # (1024, 256) uint16 counts
    posterior: np.ndarray
    merged: MergedScan
    instances: list[LabeledInstance]
    truth: dict
    identity: SyntheticIdentity
    parameters: dict = field(default_factory=dict)

    @property
    def shapes(self) -> list[dict]:
        return labelme_shapes(self.instances)


@lru_cache(maxsize=1)
def _default_taxonomy() -> Taxonomy:
    return load_taxonomy()  # parsed once per process, not once per patient


def patient_id(index: int) -> str:
    return ID_FORMAT.format(index)


def generate_phantom(
    index: int,
    seed: int = 0,
    taxonomy: Taxonomy | str | None = None,
    lesion_count: int | None = None,
    low_count: bool | None = None,
) -> Phantom:
    """Patient ``index`` of ``seed``: arrays and truth in memory, nothing written.

    ``lesion_count`` and ``low_count`` override the random draw (for tests and galleries);
    fewer metastases than asked may fit without overlapping.
    """
    taxonomy = _default_taxonomy() if taxonomy is None else load_taxonomy(taxonomy)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    body = sample_body(rng)
    anatomy = build_anatomy(body, rng)
    height_px = body.height_cm * 10.0 / PIXEL_SPACING_MM
    drawn_count = sample_lesion_count(rng)
    metastases = sample_metastases(
        anatomy, drawn_count if lesion_count is None else lesion_count, rng
    )
    hot_spots = sample_hot_spots(anatomy, rng, height_px)
    drawn_low = bool(rng.random() < LOW_COUNT_FRACTION)
    is_low = drawn_low if low_count is None else bool(low_count)
    count_level = float(rng.uniform(16.0, 30.0) if is_low else rng.uniform(42.0, 78.0))
    kidney_uptake = float(rng.uniform(0.6, 1.8))
    views = _render_views(anatomy, metastases, hot_spots, count_level, kidney_uptake, rng)
    merged = merge_views(views["anterior"], views["posterior"])
    instances = _instances(anatomy, metastases, hot_spots, merged, taxonomy)
    measured = build_truth(instances, merged.counts, taxonomy)
    identity = SyntheticIdentity.sample(rng, uid_seed=f"bsi_d2-phantom-{seed}-{index}")
    parameters = {
        **body.to_dict(),
        "total_counts": int(
            views["anterior"].sum(dtype=np.int64) + views["posterior"].sum(dtype=np.int64)
        ),
        "low_count": is_low,
        "bone_counts_per_pixel": round(count_level, 3),
        "kidney_uptake": round(kidney_uptake, 3),
        "hot_spots": [h.kind for h in hot_spots],
        "pixel_spacing_mm": PIXEL_SPACING_MM,
        "view_shape": list(VIEW_SHAPE),
    }
    pid = patient_id(index)
    seen: dict[int, list[str]] = {}
    for inst in instances:
        if inst.lesion_id is not None:
            seen.setdefault(inst.lesion_id, []).append(inst.view)
    lesions = [
        _lesion_record(m, merged, seen[m.lesion_id]) for m in metastases if m.lesion_id in seen
    ]
    truth = {
        "patient": pid,
        "seed": int(seed),
        "image": f"labelme/{pid}.png",
        "height": int(merged.counts.shape[0]),
        "width": int(merged.counts.shape[1]),
        "placements": [p.to_dict() for p in merged.placements],
        "instances": measured.pop("instances"),
        "lesions": lesions,
        **measured,
        "parameters": parameters,
    }
    return Phantom(
        pid,
        int(index),
        int(seed),
        views["anterior"],
        views["posterior"],
        merged,
        instances,
        _jsonable(truth),
        identity,
        parameters,
    )


def _render_views(
    anatomy: Anatomy,
    metastases: list[Metastasis],
    hot_spots: list[HotSpot],
    count_level: float,
    kidney_uptake: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    grain = texture(VIEW_SHAPE, rng)
    out = {}
    for view in VIEWS:
        bone = np.zeros(VIEW_SHAPE, dtype=np.float32)
        soft = np.zeros(VIEW_SHAPE, dtype=np.float32)
        for part in anatomy.parts:
            geom = part.geometry if view == "anterior" else mirror(part.geometry)
            value = part.anterior if view == "anterior" else part.posterior
            if part.kind == "soft":
                paint(soft, geom, value)
            else:
                paint(bone, geom, value * (kidney_uptake if part.kind == "organ" else 1.0))
        bone *= grain if view == "anterior" else grain[:, ::-1]
        spots = [h.spot(view) for h in hot_spots]
        spots += [m.spot(view) for m in metastases if view in m.views()]
        mean = expected_counts(bone, soft, spots, count_level)
        out[view] = poisson_counts(mean, rng)
    return out


def _instances(
    anatomy: Anatomy,
    metastases: list[Metastasis],
    hot_spots: list[HotSpot],
    merged: MergedScan,
    taxonomy: Taxonomy,
) -> list[LabeledInstance]:
    height = merged.counts.shape[0]
    outlines = dict(anatomy.regions)
    outlines.update({f"kidney_{k}": g for k, g in anatomy.kidneys.items()})
    # an annotator clicks a few dozen points, not every vertex of a buffered outline
    outlines = {k: g.simplify(OUTLINE_TOLERANCE_PX) for k, g in outlines.items()}
    # the blurred bladder falls to half its height at its outline, where the eye puts the edge
    bladders = [h.outline.simplify(OUTLINE_TOLERANCE_PX) for h in hot_spots if h.kind == "bladder"]
    bladder_name = _decoy_name("bladder", taxonomy)
    instances: list[LabeledInstance] = []
    for placement in merged.placements:
        view = placement.view
        in_view = {k: (g if view == "anterior" else mirror(g)) for k, g in outlines.items()}
        for key, geom in make_disjoint(in_view).items():
            name = _category(key, view, taxonomy)
            polys = polygon_points(to_merged(geom, placement, height)) if name else []
            if polys:
                instances.append(LabeledInstance(name, view, polys))
        # not made disjoint: the bladder lies over the pelvis in projection, as decoys may
        for bladder in bladders if bladder_name else []:
            geom = bladder if view == "anterior" else mirror(bladder)
            polys = polygon_points(to_merged(geom, placement, height))
            if polys:
                instances.append(LabeledInstance(bladder_name, view, polys))
    lesion_name = taxonomy.by_id(taxonomy.lesion_ids[0]).name if taxonomy.lesion_ids else None
    for m in metastases if lesion_name else []:
        for placement in merged.placements:
            if placement.view not in m.views():
                continue
            polys = polygon_points(to_merged(m.appearance(placement.view), placement, height))
            if polys:
                instances.append(
                    LabeledInstance(lesion_name, placement.view, polys[:1], lesion_id=m.lesion_id)
                )
    for group_id, inst in enumerate(instances, start=1):
        inst.group_id = group_id
    return instances


def _category(key: str, view: str, taxonomy: Taxonomy) -> str | None:
    """The taxonomy class an outline is labelled with: by bone and view, or kidney decoy."""
    if key.startswith("kidney"):
        return _decoy_name("kidney", taxonomy)
    for cls in taxonomy.region_classes:
        if cls.bone == key and cls.view in (None, view):
            return cls.name
    return None


def _decoy_name(label: str, taxonomy: Taxonomy) -> str | None:
    """The decoy class ``label`` spells in ``taxonomy``, or None where it has none (no instance)."""
    cls = taxonomy.resolve_label(label)
    return cls.name if cls is not None and cls.is_decoy else None


def _lesion_record(m: Metastasis, merged: MergedScan, views: list[str]) -> dict:
    centres = {}
    for placement in merged.placements:
        if placement.view in views:
            x, y = m.center
            if placement.view == "posterior":
                x = VIEW_SHAPE[1] - x
            centres[placement.view] = [
                round(x + placement.col_offset, 2),
                round(y + placement.row_offset, 2),
            ]
    return {
        "lesion_id": m.lesion_id,
        "bone": m.bone,
        "site": m.site,
        "views": list(centres),
        "center_merged": centres,
        "diameter_mm": round(m.diameter_mm, 2),
        "depth": round(m.depth, 3),
        "intensity": round(m.intensity, 3),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- files ----------------------------------------------------------------------------------


def write_phantom(phantom: Phantom, out: str | Path, one_view_per_file: bool = False) -> Path:
    """Write one phantom's DICOM, merged PNGs, Labelme JSON and truth JSON; returns the truth
    path."""
    from bsi_d2.io.base import COUNTS_SUFFIX
    from bsi_d2.io.labelme import write_labelme
    from bsi_d2.io.png import write_png

    out = Path(out)
    pid = phantom.patient
    dicom_dir, labelme_dir, truth_dir = out / "dicom", out / "labelme", out / "truth"
    for d in (dicom_dir, labelme_dir, truth_dir):
        d.mkdir(parents=True, exist_ok=True)
    if one_view_per_file:
        write_one_view(
            dicom_dir / f"{pid}_ANT.dcm",
            phantom.anterior,
            "anterior",
            phantom.identity,
            PIXEL_SPACING_MM,
        )
        write_one_view(
            dicom_dir / f"{pid}_POST.dcm",
            phantom.posterior,
            "posterior",
            phantom.identity,
            PIXEL_SPACING_MM,
        )
    else:
        write_two_frame(
            dicom_dir / f"{pid}.dcm",
            phantom.anterior,
            phantom.posterior,
            phantom.identity,
            PIXEL_SPACING_MM,
        )
    write_png(labelme_dir / f"{pid}.png", phantom.merged.display)
    counts = np.rint(phantom.merged.counts).astype(np.uint16)
    write_png(labelme_dir / f"{pid}{COUNTS_SUFFIX}", counts)
    h, w = phantom.merged.display.shape
    write_labelme(labelme_dir / f"{pid}.json", f"{pid}.png", h, w, phantom.shapes)
    truth_path = truth_dir / f"{pid}.json"
    truth_path.write_text(json.dumps(phantom.truth, indent=1) + "\n", encoding="utf-8")
    return truth_path


def _generate_and_write(task: tuple[int, int, str, bool]) -> tuple[int, str | None, dict | None]:
    index, seed, out, one_view = task
    try:
        phantom = generate_phantom(index, seed)
        path = write_phantom(phantom, out, one_view)
    except Exception as err:  # one broken patient must not stop the batch; it is recorded
        logger.exception("%s: generation failed", patient_id(index))
        return index, None, {"patient": patient_id(index), "error": f"{type(err).__name__}: {err}"}
    summary = {
        "patient": phantom.patient,
        "lesion_count": phantom.truth["lesion_count"],
        "bsi": phantom.truth["bsi"],
        "arm_pose": phantom.parameters["arm_pose"],
        "low_count": phantom.parameters["low_count"],
    }
    return index, str(path), summary


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; nested threads only contend


def write_phantoms(
    out: str | Path,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    one_view_per_file: bool = False,
) -> list[Path]:
    """Write patients ``0 .. n-1`` of ``seed`` under ``out`` and a ``manifest.json``.

    Returns the truth JSON path of every patient written, in order. A patient that fails is
    logged and listed under ``failed`` in the manifest; the others are still written.
    """
    from bsi_d2 import __version__

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = min(os.cpu_count() or 1, n) if workers is None else max(1, int(workers))
    tasks = [(i, int(seed), str(out), bool(one_view_per_file)) for i in range(n)]
    if workers <= 1 or n <= 1:
        _init_worker()
        results = [_generate_and_write(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            results = list(
                pool.map(_generate_and_write, tasks, chunksize=max(1, n // (4 * workers)))
            )
    written = [Path(p) for _, p, _ in sorted(results, key=lambda r: r[0]) if p is not None]
    ok = [s for _, p, s in results if p is not None]
    failed = [s for _, p, s in results if p is None]
    counts = [s["lesion_count"] for s in ok]
    manifest = {
        "software": "bsi_d2",
        "version": __version__,
        "generator": "bsi_d2.phantom",
        "seed": int(seed),
        "n": int(n),
        "ids": [s["patient"] for s in ok],
        "layout": {
            "dicom": "dicom/<id>_ANT.dcm, dicom/<id>_POST.dcm"
            if one_view_per_file
            else "dicom/<id>.dcm (frame 1 anterior, frame 2 posterior)",
            "image": "labelme/<id>.png (8-bit display), labelme/<id>.counts.png (16-bit counts)",
            "labelme": "labelme/<id>.json",
            "truth": "truth/<id>.json",
        },
        "kidney_instances": "one kidney instance per kidney per view",
        "bladder_instances": "one bladder instance per view (a decoy, category bladder, id 12 in "
        "the default taxonomy); its mask may overlap the pelvis region, region masks never overlap",
        "summary": {
            "patients_without_lesion": sum(1 for c in counts if c == 0),
            "lesions_min": min(counts, default=0),
            "lesions_max": max(counts, default=0),
            "low_count_scans": sum(1 for s in ok if s["low_count"]),
            "arm_poses": {
                p: sum(1 for s in ok if s["arm_pose"] == p) for p in ("down", "away", "crossed")
            },
        },
        "patients": ok,
        "failed": failed,
        "note": "Synthetic data with made-up identities; not for diagnosis.",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if failed:
        logger.warning("%d of %d phantoms failed; see %s", len(failed), n, out / "manifest.json")
    return written
