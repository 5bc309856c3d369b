"""Later studies of a phantom patient: the same body, a new acquisition, disease that evolved.

Visit ``v`` (1 .. K) of patient ``i`` of seed ``s`` draws from ``SeedSequence([s, i, v])``, so
the baseline (visit 0, :func:`~bsi_d2.phantom.generate.generate_phantom`) is drawn as without
follow-ups. A visit keeps the baseline's anatomy and lesion ids; the patient lies a few pixels
and up to a degree away from where they lay at the baseline; each metastasis of the visit before
grows, shrinks, stays or resolves as the visit's trend (progression, stable, response) makes
likely, and new lesions take ids never used in the patient before.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace

import numpy as np
from shapely import affinity
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from bsi_d2.phantom.anatomy import PIXEL_SPACING_MM, VIEW_SHAPE, Anatomy, BodyParameters
from bsi_d2.phantom.dicom_writer import study_link
from bsi_d2.phantom.disease import Disease, SiteShapes, focal_lesion
from bsi_d2.phantom.generate import PatientModel, Phantom, acquire, render_study
from bsi_d2.phantom.lesions import (
    MAX_LESIONS,
    HotSpot,
    Metastasis,
    sample_hot_spots,
    sample_metastases,
)
from bsi_d2.phantom.lookalikes import sample_lookalikes

STUDY_FORMAT = "{patient}_v{visit}"
INTERVAL_DAYS = (60, 120)  # from one study to the next
SHIFT_PX = (4.0, 6.0)  # largest change of the patient's position (columns, rows) vs the baseline
MAX_SHIFT_COLUMNS = 8.0  # of the body's midline from the view's centre: the hands stay in view
ROTATION_CHANGE_DEG = 1.0
FATES = ("grown", "shrunk", "stable", "resolved")  # of a lesion of the visit before
NEW = "new"
# benign uptake of the day (drawn again each visit); the other look-alikes persist
TRANSIENT = ("bladder", "injection", "urine_contamination", "catheter")


@dataclass(frozen=True)
class Trend:
    """How a patient's disease goes from one visit to the next."""

    name: str
    fates: tuple[float, float, float, float]  # probability of each of FATES, per lesion
    new_lesions: tuple[float, ...]  # probability of 0, 1, 2, ... new lesions


TRENDS = {
    "progression": Trend("progression", (0.45, 0.10, 0.40, 0.05), (0.0, 0.35, 0.3, 0.2, 0.15)),
    "stable": Trend("stable", (0.20, 0.15, 0.55, 0.10), (0.8, 0.2)),
    "response": Trend("response", (0.05, 0.40, 0.25, 0.30), (1.0,)),
}
# a patient with metastases at the first follow-up (per lesion about 15 % resolve, 25 % grow,
# 20 % shrink); a later visit keeps the trend before it with TREND_PERSISTENCE
TREND_WEIGHTS = {"progression": 0.4, "stable": 0.3, "response": 0.3}
TREND_PERSISTENCE = 0.6
CLEAN_PROGRESSION = 0.3  # a patient without metastases who gets new ones at a visit
# fate -> ranges of the factor on diameter and on intensity
CHANGE = {
    "grown": ((1.2, 1.6), (1.05, 1.4)),
    "shrunk": ((0.6, 0.85), (0.65, 0.9)),
    "stable": ((0.97, 1.03), (0.95, 1.05)),
}
# disease model -> (diameter mm, intensity) a change stays within: a standard lesion stays
# visible in its near view and large enough to be drawn
LIMITS = {
    "standard": ((8.0, 45.0), (1.3, 5.0)),
    "clinical": ((5.0, 60.0), (0.15, 8.0)),
}


@dataclass(frozen=True)
class Placement:
    """Where the patient lies at a visit: shifted and turned against the baseline."""

    shift: tuple[float, float]  # columns, rows
    rotation_deg: float
    pivot: tuple[float, float]  # the body's rotation centre at this visit

    def geometry(self, geometry: BaseGeometry) -> BaseGeometry:
        moved = affinity.translate(geometry, *self.shift)
        return affinity.rotate(moved, self.rotation_deg, origin=self.pivot)

    def point(self, point: tuple[float, float]) -> tuple[float, float]:
        q = self.geometry(Point(point))
        return (float(q.x), float(q.y))

    def body(self, body: BodyParameters) -> BodyParameters:
        shift = (body.shift[0] + self.shift[0], body.shift[1] + self.shift[1])
        return replace(body, shift=shift, rotation_deg=body.rotation_deg + self.rotation_deg)

    def anatomy(self, anatomy: Anatomy) -> Anatomy:
        return Anatomy(
            parts=[replace(p, geometry=self.geometry(p.geometry)) for p in anatomy.parts],
            regions={k: self.geometry(g) for k, g in anatomy.regions.items()},
            kidneys={k: self.geometry(g) for k, g in anatomy.kidneys.items()},
            landmarks={k: self.point(p) for k, p in anatomy.landmarks.items()},
        )

    def lesion(self, m: Metastasis) -> Metastasis:
        return replace(m, center=self.point(m.center), outline=self.geometry(m.outline))


def sample_placement(body: BodyParameters, rng: np.random.Generator) -> Placement:
    """A small change of the patient's position on the table (pixels and degrees, rounded as
    recorded), the rotation about the body's centre as :func:`build_anatomy` turns it."""
    room = (-MAX_SHIFT_COLUMNS - body.shift[0], MAX_SHIFT_COLUMNS - body.shift[0])
    dx = round(float(np.clip(rng.uniform(-SHIFT_PX[0], SHIFT_PX[0]), *room)), 2)
    dy = round(float(rng.uniform(-SHIFT_PX[1], SHIFT_PX[1])), 2)
    rotation = round(float(rng.uniform(-ROTATION_CHANGE_DEG, ROTATION_CHANGE_DEG)), 3)
    height_px = body.height_cm * 10.0 / PIXEL_SPACING_MM
    pivot = (
        VIEW_SHAPE[1] / 2.0 + body.shift[0] + dx,
        body.top_row + body.shift[1] + dy + 0.5 * height_px,
    )
    return Placement((dx, dy), rotation, pivot)


def sample_trend(previous: str | None, has_lesions: bool, rng: np.random.Generator) -> Trend:
    """The visit's trend: a clean patient stays clean or progresses; one with metastases keeps
    the trend of the visit before with :data:`TREND_PERSISTENCE`, else draws one."""
    if not has_lesions:
        return TRENDS["progression" if rng.random() < CLEAN_PROGRESSION else "stable"]
    if previous is not None and rng.random() < TREND_PERSISTENCE:
        return TRENDS[previous]
    names = list(TREND_WEIGHTS)
    return TRENDS[names[int(rng.choice(len(names), p=list(TREND_WEIGHTS.values())))]]


def evolve(
    metastases: list[Metastasis],
    trend: Trend,
    model: PatientModel,
    rng: np.random.Generator,
) -> tuple[list[Metastasis], dict[int, str]]:
    """Each lesion's fate under ``trend`` and the lesions that persist, grown, shrunk or about
    the same (outline scaled about its centre; in the hard preset kept to its bone)."""
    (d_lo, d_hi), (i_lo, i_hi) = LIMITS.get(model.preset.disease, LIMITS["clinical"])
    bones = SiteShapes(model.anatomy) if model.preset.disease != "standard" else None
    kept: list[Metastasis] = []
    fates: dict[int, str] = {}
    for m in metastases:
        fate = FATES[int(rng.choice(len(FATES), p=trend.fates))]
        fates[m.lesion_id] = fate
        if fate == "resolved":
            continue
        size, uptake = CHANGE[fate]
        # a limit never turns a change round: a lesion beyond it stays where it is
        diameter = _within(m.diameter_mm * rng.uniform(*size), m.diameter_mm, d_lo, d_hi)
        intensity = _within(m.intensity * rng.uniform(*uptake), m.intensity, i_lo, i_hi)
        factor = diameter / m.diameter_mm
        outline = affinity.scale(m.outline, factor, factor, origin=m.center)
        if bones is not None and m.site in bones.sites():
            on_bone = outline.intersection(bones.bone(m.site))
            outline = on_bone if on_bone.area >= 2.0 else outline
        kept.append(replace(m, diameter_mm=diameter, intensity=intensity, outline=outline))
    return kept, fates


def _within(value: float, before: float, lo: float, hi: float) -> float:
    return float(np.clip(value, min(before, lo), max(before, hi)))


def new_lesions(
    model: PatientModel,
    placed: list[Metastasis],
    trend: Trend,
    first_id: int,
    rng: np.random.Generator,
) -> list[Metastasis]:
    """The lesions that appear at a visit, on the bones and kept off ``placed``, numbered from
    ``first_id``."""
    count = int(rng.choice(len(trend.new_lesions), p=trend.new_lesions))
    count = min(count, max(0, MAX_LESIONS - len(placed)))
    if model.preset.disease == "standard":
        return sample_metastases(model.anatomy, count, rng, existing=placed, first_id=first_id)
    shapes = SiteShapes(model.anatomy)
    found: list[Metastasis] = []
    for _ in range(count):
        m = focal_lesion(shapes, model.preset, [*placed, *found], rng)
        if m is not None:
            found.append(replace(m, lesion_id=first_id + len(found)))
    return found


def benign_uptake(model: PatientModel, rng: np.random.Generator) -> list[HotSpot]:
    """The bladder, injection site and contamination of the day; the rest as at the baseline."""
    height_px = model.body.height_cm * 10.0 / PIXEL_SPACING_MM
    if model.preset.disease == "standard":
        fresh = sample_hot_spots(model.anatomy, rng, height_px)
    else:
        fresh, _ = sample_lookalikes(model.anatomy, rng, height_px, model.disease.superscan)
    kept = [h for h in model.hot_spots if h.kind not in TRANSIENT]
    return [h for h in fresh if h.kind in TRANSIENT] + kept


def later_date(study_date: str, days: int) -> str:
    """A DICOM date (YYYYMMDD) ``days`` later."""
    day = datetime.datetime.strptime(study_date, "%Y%m%d").date() + datetime.timedelta(days)
    return day.strftime("%Y%m%d")


@dataclass
class _Course:
    """The disease as it stands after a visit, in the baseline's frame."""

    metastases: list[Metastasis]
    next_id: int
    trend: str | None = None
    days: int = 0  # since the baseline


def follow_up_series(baseline: Phantom, visits: int) -> list[Phantom]:
    """The baseline and ``visits`` later studies of its patient, each truth with its
    ``study_key``, ``patient_key`` and ``follow_up`` block (fates and deltas against the study
    before); the baseline itself is not changed."""
    if baseline.model is None:
        raise ValueError(f"{baseline.patient}: a phantom without its model has no follow-ups")
    if visits < 0:
        raise ValueError(f"visits must be >= 0, got {visits}")
    model = baseline.model
    ids = [baseline.patient] + [
        STUDY_FORMAT.format(patient=baseline.patient, visit=v) for v in range(1, visits + 1)
    ]
    first = replace(baseline, truth=dict(baseline.truth))
    _link(first, None, ids, _baseline_block())
    series = [first]
    known = [m.lesion_id for m in model.disease.metastases]
    course = _Course(list(model.disease.metastases), max(known, default=0) + 1)
    for visit in range(1, visits + 1):
        series.append(_follow_up(baseline, series[-1], course, visit, ids))
    return series


def _baseline_block() -> dict:
    return {
        "days_since_previous": None,
        "days_since_baseline": 0,
        "trend": None,
        "position_shift_px": [0.0, 0.0],
        "rotation_change_deg": 0.0,
        "lesion_fates": {},
        "lesion_changes": {},
    }


def _follow_up(
    baseline: Phantom, previous: Phantom, course: _Course, visit: int, ids: list[str]
) -> Phantom:
    model = baseline.model
    rng = np.random.default_rng(np.random.SeedSequence([baseline.seed, baseline.index, visit]))
    placement = sample_placement(model.body, rng)
    days = int(rng.integers(INTERVAL_DAYS[0], INTERVAL_DAYS[1] + 1))
    trend = sample_trend(course.trend, bool(course.metastases), rng)
    before = {m.lesion_id: m for m in course.metastases}
    persisting, fates = evolve(course.metastases, trend, model, rng)
    appeared = new_lesions(model, persisting, trend, course.next_id, rng)
    fates.update({m.lesion_id: NEW for m in appeared})
    metastases = persisting + appeared
    hot_spots = benign_uptake(model, rng)
    pattern = model.disease.pattern if model.disease.pattern != "none" else "focal"
    superscan = model.disease.superscan and any(m.kind == "superscan" for m in metastases)
    disease = Disease(
        [placement.lesion(m) for m in metastases],
        [replace(c, outline=placement.geometry(c.outline)) for c in model.disease.cold],
        superscan,
        pattern if metastases else "none",
    )
    moved = replace(
        model,
        body=placement.body(model.body),
        anatomy=placement.anatomy(model.anatomy),
        disease=disease,
        hot_spots=[replace(h, outline=placement.geometry(h.outline)) for h in hot_spots],
        cold_spots=[replace(c, outline=placement.geometry(c.outline)) for c in model.cold_spots],
    )
    acquisition = acquire(moved, rng)
    identity = replace(
        previous.identity,
        study_date=later_date(previous.identity.study_date, days),
        uid_seed=f"bsi_d2-phantom-{baseline.seed}-{baseline.index}-v{visit}",
    )
    study = render_study(
        ids[visit], baseline.index, baseline.seed, moved, acquisition, rng, identity, visit
    )
    course.metastases = metastases
    course.next_id += len(appeared)
    course.trend = trend.name
    course.days += days
    counts = {fate: sum(1 for f in fates.values() if f == fate) for fate in (*FATES, NEW)}
    _link(
        study,
        previous,
        ids,
        {
            "days_since_previous": days,
            "days_since_baseline": course.days,
            "trend": trend.name,
            "position_shift_px": list(placement.shift),
            "rotation_change_deg": placement.rotation_deg,
            "lesion_fates": {str(k): v for k, v in fates.items()},
            "lesion_changes": {
                str(m.lesion_id): {
                    "diameter_ratio": round(m.diameter_mm / before[m.lesion_id].diameter_mm, 4),
                    "intensity_ratio": round(m.intensity / before[m.lesion_id].intensity, 4),
                }
                for m in persisting
            },
            "new_lesions": counts[NEW],
            "resolved_lesions": counts["resolved"],
            "persistent_lesions": counts["grown"] + counts["shrunk"] + counts["stable"],
        },
    )
    return study


def _link(study: Phantom, previous: Phantom | None, ids: list[str], block: dict) -> None:
    """Add the study link and the ``follow_up`` block to ``study``'s truth."""
    link = study_link(study.identity)
    truth = study.truth
    before = previous.truth if previous is not None else None

    def delta(value) -> float | int | None:
        return None if before is None else value(truth) - value(before)

    truth["study_key"] = link["study_key"]
    truth["patient_key"] = link["patient_key"]
    truth["follow_up"] = {
        "patient": ids[0],
        "visit": study.visit,
        "previous": None if previous is None else previous.patient,
        "studies": ids,
        "study_date": link["study_date"],
        "study_date_kind": link["study_date_kind"],
        **block,
        "delta_bsi": delta(lambda t: t["bsi"]),
        "delta_reference_bsi": delta(lambda t: t["reference"]["bsi"]),
        "delta_lesion_count": delta(lambda t: t["lesion_count"]),
        "new_lesions": block.get("new_lesions"),
        "resolved_lesions": block.get("resolved_lesions"),
        "persistent_lesions": block.get("persistent_lesions"),
    }


def summarise_follow_ups(summaries: list[dict]) -> dict:
    """The manifest's summary of the follow-up studies: fates, trends and BSI changes."""
    fates = [f for s in summaries for f in s["lesion_fates"].values()]
    return {
        "studies": len(summaries),
        "lesion_fates": {f: fates.count(f) for f in (*FATES, NEW)},
        "trends": {t: sum(1 for s in summaries if s["trend"] == t) for t in TRENDS},
        "delta_bsi_min": min((s["delta_bsi"] for s in summaries), default=0.0),
        "delta_bsi_max": max((s["delta_bsi"] for s in summaries), default=0.0),
    }
