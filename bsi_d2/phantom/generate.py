"""One synthetic patient in memory (:func:`generate_phantom`) and a folder of them on disk
(:func:`write_phantoms`), with later studies of each patient where asked
(:mod:`bsi_d2.phantom.followup`).

Patient ``i`` of seed ``s`` draws everything from ``SeedSequence([s, i])``, so a patient is the
same whatever ``n`` or the number of worker processes. A scan is drawn in three steps: the
patient (:class:`PatientModel`: body, anatomy, disease, benign uptake), an acquisition of it
(:func:`acquire`) and the merged scan with its labels and truth (:func:`render_study`).

With ``label_benign`` the benign look-alikes (everything but the bladder, which is a decoy of
its own) are labelled as instances of the taxonomy's ``benign`` decoy class, in each view where
a reader sees them, kept clear of the lesions and the other decoys; nothing else changes: the
same draws, the same counts, the same truth BSI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from bsi_d2.phantom.anatomy import (
    PIXEL_SPACING_MM,
    VIEW_SHAPE,
    Anatomy,
    BodyParameters,
    build_anatomy,
    mirror,
    sample_body,
)
from bsi_d2.phantom.dicom_writer import (
    SyntheticIdentity,
    study_link,
    write_one_view,
    write_two_frame,
)
from bsi_d2.phantom.disease import Disease, sample_disease
from bsi_d2.phantom.lesions import (
    VISIBLE as VISIBLE_UPTAKE,
)
from bsi_d2.phantom.lesions import (
    ColdSpot,
    HotSpot,
    Metastasis,
    sample_hot_spots,
    sample_lesion_count,
    sample_metastases,
)
from bsi_d2.phantom.lookalikes import sample_lookalikes
from bsi_d2.phantom.presets import Difficulty, get_difficulty
from bsi_d2.phantom.reference import geometric_reference
from bsi_d2.phantom.render import (
    add_blurred_spots,
    blur,
    depth_sigma,
    drawn_outline,
    expected_counts,
    paint,
    poisson_counts,
    scatter,
    texture,
)
from bsi_d2.phantom.truth import (
    GAP_PX,
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
LOW_COUNT_MCTS = 1.0  # hard preset: a view below this many counts is a low-count scan
# what a reader can see (hard preset): contrast over the local counts, and Rose's criterion
VISIBLE_CONTRAST = 0.25
ROSE_SNR = 5.0
FAINT_CONTRAST = 0.45  # annotator noise: below this a lesion may be left unlabelled
MISSED_FAINT = 0.35  # ... with this probability
SOFT_SIGMA_DETAILED_PX = 4.5
PATTERNS = ("none", "focal", "diffuse_spine", "extensive", "superscan")


@dataclass
class PatientModel:
    """What a phantom's scan was drawn from, in its anterior view's frame: kept so that later
    studies of the patient show the same body (:mod:`bsi_d2.phantom.followup`)."""

    body: BodyParameters
    anatomy: Anatomy
    disease: Disease
    hot_spots: list[HotSpot]
    cold_spots: list[ColdSpot]  # the look-alikes' and the disease's
    preset: Difficulty
    taxonomy: Taxonomy
    label_benign: bool = False  # look-alikes labelled as the taxonomy's benign class


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
    difficulty: str = "standard"
    visit: int = 0  # 0 the baseline, v the v-th follow-up study (bsi_d2.phantom.followup)
    model: PatientModel | None = field(default=None, repr=False, compare=False)

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
    difficulty: str | Difficulty | None = None,
    annotator_noise: bool | None = None,
    make_disease: Callable[[Anatomy, np.random.Generator], Disease] | None = None,
    make_lookalikes: Callable[[Anatomy, np.random.Generator], tuple[list, list]] | None = None,
    label_benign: bool = False,
) -> Phantom:
    """Patient ``index`` of ``seed``: arrays and truth in memory, nothing written.

    ``difficulty`` is a preset name (``standard``, the default, or ``hard``; see
    :mod:`bsi_d2.phantom.presets`); ``annotator_noise`` switches jittered outlines and missed
    faint lesions on or off whatever the preset says. ``lesion_count`` and ``low_count``
    override the random draw (for tests and galleries); fewer metastases than asked may fit.
    ``make_disease`` and ``make_lookalikes`` (hard preset) replace the random disease and the
    look-alikes with hand-built ones drawn on this patient's anatomy. ``label_benign`` labels
    the benign look-alikes as the taxonomy's ``benign`` class (ValueError if it has none).
    """
    taxonomy = _default_taxonomy() if taxonomy is None else load_taxonomy(taxonomy)
    if label_benign:
        require_benign_class(taxonomy)
    preset = get_difficulty(difficulty, annotator_noise)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    body = sample_body(rng, preset.habitus_sd, preset.habitus_max, preset.habitus_mean)
    anatomy = build_anatomy(body, rng, detailed=preset.detailed_anatomy)
    height_px = body.height_cm * 10.0 / PIXEL_SPACING_MM
    cold_spots: list[ColdSpot] = []
    if preset.disease == "standard" and (make_disease or make_lookalikes):
        raise ValueError("make_disease and make_lookalikes need the hard preset's renderer")
    if preset.disease == "standard":
        drawn_count = sample_lesion_count(rng)
        metastases = sample_metastases(
            anatomy, drawn_count if lesion_count is None else lesion_count, rng
        )
        disease = Disease(metastases, pattern="focal" if metastases else "none")
        hot_spots = sample_hot_spots(anatomy, rng, height_px)
    else:
        if make_disease is None:
            disease = sample_disease(anatomy, preset, rng, count=lesion_count)
        else:
            disease = make_disease(anatomy, rng)
        if make_lookalikes is None:
            hot_spots, cold_spots = sample_lookalikes(anatomy, rng, height_px, disease.superscan)
        else:
            hot_spots, cold_spots = make_lookalikes(anatomy, rng)
        cold_spots = cold_spots + disease.cold
    model = PatientModel(
        body, anatomy, disease, hot_spots, cold_spots, preset, taxonomy, bool(label_benign)
    )
    acquisition = acquire(model, rng, low_count)
    return render_study(patient_id(index), int(index), int(seed), model, acquisition, rng)


@dataclass
class Acquisition:
    """One acquisition of a patient: the count views and what they were drawn with."""

    views: dict[str, np.ndarray]
    low_count: bool
    count_level: float  # counts per pixel of normal bone
    kidney_uptake: float
    # hard preset: lesion id -> view -> the outline an annotator draws, and what was visible
    drawn: dict[int, dict[str, BaseGeometry]] | None = None
    visibility: dict[int, dict[str, dict]] = field(default_factory=dict)
    # with label_benign: look-alike index -> view -> the outline a reader draws where seen
    benign_drawn: dict[int, dict[str, BaseGeometry]] = field(default_factory=dict)


def acquire(
    model: PatientModel, rng: np.random.Generator, low_count: bool | None = None
) -> Acquisition:
    """Count level, kidney uptake and the Poisson count views of ``model``'s patient as drawn
    now; ``low_count`` overrides the draw of a low-count scan."""
    preset, disease = model.preset, model.disease
    if preset.disease == "standard":
        drawn_low = bool(rng.random() < LOW_COUNT_FRACTION)
        is_low = drawn_low if low_count is None else bool(low_count)
        count_level = float(rng.uniform(16.0, 30.0) if is_low else rng.uniform(42.0, 78.0))
        kidney_uptake = float(rng.uniform(0.6, 1.8))
        views = _render_views(
            model.anatomy, disease.metastases, model.hot_spots, count_level, kidney_uptake, rng
        )
        benign = _seen_lookalikes_standard(model.hot_spots) if model.label_benign else {}
        return Acquisition(views, is_low, count_level, kidney_uptake, benign_drawn=benign)
    lo, hi = preset.count_range_mcts or (0.5, 3.5)
    if low_count is None:  # log-normal around a typical 1.8 Mcts per view, clipped
        target = float(np.clip(np.exp(rng.normal(np.log(1.8), 0.45)), lo, hi)) * 1e6
    else:
        lo, hi = (lo, LOW_COUNT_MCTS) if low_count else (LOW_COUNT_MCTS, hi)
        target = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * 1e6
    kidney_uptake = float(rng.uniform(0.6, 1.8)) * (0.12 if disease.superscan else 1.0)
    views, base, count_level = _render_views_detailed(
        model.anatomy,
        disease,
        model.hot_spots,
        model.cold_spots,
        target,
        kidney_uptake,
        preset,
        rng,
    )
    is_low = bool(views["anterior"].sum() < LOW_COUNT_MCTS * 1e6)
    drawn, visibility = _drawn_lesions(disease.metastases, base, count_level, preset, rng)
    benign = {}
    if model.label_benign:  # drawn by the lesions' rule, without a draw: the counts stay the same
        benign = _seen_lookalikes(model.hot_spots, base, count_level, preset)
    return Acquisition(views, is_low, count_level, kidney_uptake, drawn, visibility, benign)


def render_study(
    pid: str,
    index: int,
    seed: int,
    model: PatientModel,
    acquisition: Acquisition,
    rng: np.random.Generator,
    identity: SyntheticIdentity | None = None,
    visit: int = 0,
) -> Phantom:
    """The phantom ``pid`` of an acquisition: merged scan, labelled instances and the truth;
    without ``identity`` one is drawn (the baseline's)."""
    anatomy, metastases, hot_spots = model.anatomy, model.disease.metastases, model.hot_spots
    preset, taxonomy, disease = model.preset, model.taxonomy, model.disease
    views, drawn, visibility = acquisition.views, acquisition.drawn, acquisition.visibility
    merged = merge_views(views["anterior"], views["posterior"])
    instances = _instances(
        anatomy, metastases, hot_spots, merged, taxonomy, drawn, preset.annotator_noise, rng
    )
    if model.label_benign:
        instances += benign_instances(acquisition.benign_drawn, instances, merged, taxonomy)
        for group_id, inst in enumerate(instances, start=1):
            inst.group_id = group_id
    measured = build_truth(instances, merged.counts, taxonomy)
    if identity is None:
        identity = SyntheticIdentity.sample(rng, uid_seed=f"bsi_d2-phantom-{seed}-{index}")
    parameters = {
        **model.body.to_dict(),
        "total_counts": int(
            views["anterior"].sum(dtype=np.int64) + views["posterior"].sum(dtype=np.int64)
        ),
        "low_count": acquisition.low_count,
        "bone_counts_per_pixel": round(acquisition.count_level, 3),
        "kidney_uptake": round(acquisition.kidney_uptake, 3),
        "hot_spots": [h.kind for h in hot_spots],
        "pixel_spacing_mm": PIXEL_SPACING_MM,
        "view_shape": list(VIEW_SHAPE),
    }
    seen: dict[int, list[str]] = {}
    for inst in instances:
        if inst.lesion_id is not None:
            seen.setdefault(inst.lesion_id, []).append(inst.view)
    reference = geometric_reference(anatomy.regions, metastases, taxonomy.weights, set(seen))
    outside = set(reference["outside_regions"])
    lesions = [
        _lesion_record(m, merged, seen.get(m.lesion_id, []), m.lesion_id in outside)
        | ({"visibility": visibility[m.lesion_id]} if m.lesion_id in visibility else {})
        for m in metastases
        if m.lesion_id in seen or drawn is not None
    ]
    reference["bsi_image_minus_reference"] = float(measured["bsi"] - reference["bsi"])
    truth = {
        "patient": pid,
        "seed": int(seed),
        "difficulty": preset.name,
        "image": f"labelme/{pid}.png",
        "height": int(merged.counts.shape[0]),
        "width": int(merged.counts.shape[1]),
        "placements": [p.to_dict() for p in merged.placements],
        "instances": measured.pop("instances"),
        "lesions": lesions,
        **measured,
        "reference": reference,
        "disease_pattern": disease.pattern,
        "superscan": disease.superscan,
        "lookalikes": [_benign_record(h.kind, h.outline, merged) for h in hot_spots],
        "cold_spots": [
            {**_benign_record(c.kind, c.outline, merged), "metastasis": c.lesion}
            for c in model.cold_spots
        ],
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
        preset.name,
        visit,
        model,
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
            geom, value = part.in_view(view)
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


def _render_views_detailed(
    anatomy: Anatomy,
    disease: Disease,
    hot_spots: list[HotSpot],
    cold_spots: list[ColdSpot],
    target_counts: float,
    kidney_uptake: float,
    preset: Difficulty,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """Counts of the hard preset: each bone blurred by its distance from the collimator, one
    bone's overlapping pieces drawn once (no hot dots where they meet), lytic lesions and metal
    taking uptake away, scatter, and the anterior view scaled to ``target_counts``.

    Returns the count views, the mean counts without any focal uptake (what a lesion is seen
    against) and the counts per pixel of normal bone."""
    grain = texture(VIEW_SHAPE, rng)
    lesion_grain = texture(VIEW_SHAPE, rng, amount=0.25)
    bone_gain = float(rng.uniform(1.5, 2.1)) if disease.superscan else 1.0
    soft_gain = preset.soft_tissue / 0.3 * (0.6 if disease.superscan else 1.0)
    relative: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # view -> (mean, with spots)
    for view in VIEWS:
        layers: dict[float, np.ndarray] = {}
        soft = np.zeros(VIEW_SHAPE, dtype=np.float32)
        organ = np.zeros(VIEW_SHAPE, dtype=np.float32)
        for part in anatomy.parts:
            geom, value = part.in_view(view)
            if part.kind == "soft":
                paint(soft, geom, value * soft_gain)
            elif part.kind == "organ":
                paint(organ, geom, value * kidney_uptake)
            elif value > 0.0:
                sigma = _view_sigma(part.mass_depth, view, preset)
                layer = layers.setdefault(sigma, np.zeros(VIEW_SHAPE, dtype=np.float32))
                paint(layer, geom, value * bone_gain, mode="max")
        g = grain if view == "anterior" else grain[:, ::-1]
        keep = np.ones(VIEW_SHAPE, dtype=np.float32)
        for c in cold_spots:
            paint(keep, c.outline if view == "anterior" else mirror(c.outline), -c.reduction)
        keep = np.clip(keep, 0.0, 1.0)
        mean = blur(organ, _view_sigma(0.75, view, preset)) + blur(soft, SOFT_SIGMA_DETAILED_PX)
        for sigma, layer in layers.items():
            mean += blur(layer * g * keep, sigma)
        hot = np.zeros(VIEW_SHAPE, dtype=np.float32)
        add_blurred_spots(
            hot, [h.spot(view, _view_sigma(h.depth, view, preset)) for h in hot_spots]
        )
        lesions = [m.source(view, _view_sigma(m.depth, view, preset)) for m in disease.metastases]
        lg = lesion_grain if view == "anterior" else lesion_grain[:, ::-1]
        add_blurred_spots(hot, lesions, gain=lg, scale=bone_gain)
        relative[view] = (mean, scatter(mean + hot, preset.scatter_fraction))
    total = float(relative["anterior"][1].sum())
    count_level = max(target_counts - preset.background * VIEW_SHAPE[0] * VIEW_SHAPE[1], 1.0)
    count_level = count_level / max(total, 1e-6)
    views, base = {}, {}
    for view, (mean, scattered) in relative.items():
        expected = scattered * count_level + preset.background
        base[view] = scatter(mean, preset.scatter_fraction) * count_level + preset.background
        views[view] = poisson_counts(np.maximum(expected, 0.0).astype(np.float64), rng)
    return views, base, float(count_level)


def _view_sigma(depth: float, view: str, preset: Difficulty) -> float:
    """Blur of a source at ``depth`` in ``view``, on a 0.25 px grid (sources share blurs)."""
    if not preset.depth_blur:
        return 1.7
    distance = depth if view == "anterior" else 1.0 - depth
    return round(depth_sigma(distance) * 4.0) / 4.0


def _drawn_lesions(
    metastases: list[Metastasis],
    base: dict[str, np.ndarray],
    count_level: float,
    preset: Difficulty,
    rng: np.random.Generator,
) -> tuple[dict[int, dict[str, BaseGeometry]], dict[int, dict[str, dict]]]:
    """The outline an annotator draws of each lesion in each view where it can be seen.

    A lesion is seen where its peak over the local counts reaches ``VISIBLE_CONTRAST`` and
    Rose's criterion (signal-to-noise of ``ROSE_SNR`` over its area) holds; its outline is the
    contour at half its blurred peak. With annotator noise, a faint lesion is left out with
    probability ``MISSED_FAINT``."""
    drawn: dict[int, dict[str, BaseGeometry]] = {}
    seen: dict[int, dict[str, dict]] = {}
    for m in metastases:
        drawn[m.lesion_id], seen[m.lesion_id] = {}, {}
        for view in VIEWS:
            shape = m.outline if view == "anterior" else mirror(m.outline)
            sigma = _view_sigma(m.depth, view, preset)
            outline, contrast, snr = _seen_outline(
                shape, sigma, m.strength(view), base[view], count_level
            )
            if outline.is_empty:
                continue
            visible = contrast >= VISIBLE_CONTRAST and snr >= ROSE_SNR
            labelled = visible and not (
                preset.annotator_noise and contrast < FAINT_CONTRAST and rng.random() < MISSED_FAINT
            )
            seen[m.lesion_id][view] = {
                "contrast": round(float(contrast), 3),
                "snr": round(float(snr), 1),
                "visible": bool(visible),
                "labelled": bool(labelled),
            }
            if labelled:
                drawn[m.lesion_id][view] = outline
    return drawn, seen


def _seen_outline(
    shape: BaseGeometry, sigma: float, strength: float, base: np.ndarray, count_level: float
) -> tuple[BaseGeometry, float, float]:
    """The outline at half the blurred peak of a source of ``strength`` (relative to bone) in
    one view, its contrast over the local counts ``base`` and its signal-to-noise ratio."""
    outline, peak = drawn_outline(shape, sigma)
    if outline.is_empty:
        return outline, 0.0, 0.0
    c = outline.representative_point()
    r = min(max(int(c.y), 0), VIEW_SHAPE[0] - 1)
    col = min(max(int(c.x), 0), VIEW_SHAPE[1] - 1)
    local = float(max(base[r, col], 1e-3))
    added = strength * peak * count_level
    contrast = added / local
    snr = 0.75 * added * np.sqrt(outline.area) / np.sqrt(local)
    return outline, contrast, snr


def _benign_lookalikes(hot_spots: list[HotSpot]) -> list[tuple[int, HotSpot]]:
    """The look-alikes labelled benign, by index: every hot spot but the bladder (a decoy)."""
    return [(i, h) for i, h in enumerate(hot_spots) if h.kind != "bladder"]


def _seen_lookalikes_standard(hot_spots: list[HotSpot]) -> dict[int, dict[str, BaseGeometry]]:
    """Standard preset: a look-alike is drawn as it was painted, in each view where it is as
    strong as a metastasis must be to show (:data:`~bsi_d2.phantom.lesions.VISIBLE`)."""
    drawn: dict[int, dict[str, BaseGeometry]] = {}
    for i, h in _benign_lookalikes(hot_spots):
        strength = {"anterior": h.anterior, "posterior": h.posterior}
        drawn[i] = {
            view: h.outline if view == "anterior" else mirror(h.outline)
            for view in VIEWS
            if strength[view] >= VISIBLE_UPTAKE
        }
    return drawn


def _seen_lookalikes(
    hot_spots: list[HotSpot], base: dict[str, np.ndarray], count_level: float, preset: Difficulty
) -> dict[int, dict[str, BaseGeometry]]:
    """Hard preset: a look-alike is drawn as a lesion is (:func:`_drawn_lesions`), at half its
    blurred peak in each view where it is seen; never missed and never jittered (no draw)."""
    drawn: dict[int, dict[str, BaseGeometry]] = {}
    for i, h in _benign_lookalikes(hot_spots):
        drawn[i] = {}
        for view in VIEWS:
            shape = h.outline if view == "anterior" else mirror(h.outline)
            strength = h.anterior if view == "anterior" else h.posterior
            sigma = _view_sigma(h.depth, view, preset)
            outline, contrast, snr = _seen_outline(shape, sigma, strength, base[view], count_level)
            if not outline.is_empty and contrast >= VISIBLE_CONTRAST and snr >= ROSE_SNR:
                drawn[i][view] = outline
    return drawn


def require_benign_class(taxonomy: Taxonomy) -> str:
    """The name of ``taxonomy``'s benign decoy class; ValueError naming the taxonomy if none."""
    cls = taxonomy.benign_class
    if cls is None:
        raise ValueError(
            f"taxonomy {taxonomy.source or taxonomy.name}: labelling benign look-alikes needs a "
            "decoy class labelled 'benign' (the built-in taxonomy 'benign' has one)"
        )
    return cls.name


def benign_instances(
    drawn: dict[int, dict[str, BaseGeometry]],
    labelled: list[LabeledInstance],
    merged: MergedScan,
    taxonomy: Taxonomy,
) -> list[LabeledInstance]:
    """The benign instances of each view: the drawn look-alikes' union, less every lesion and
    decoy already ``labelled`` there (grown by the truth's gap, so no pixel is shared and no
    lesion falls inside a benign outline), one instance per connected piece."""
    name = require_benign_class(taxonomy)
    height = merged.counts.shape[0]
    out: list[LabeledInstance] = []
    for placement in merged.placements:
        view = placement.view
        shapes = [outlines[view] for outlines in drawn.values() if view in outlines]
        if not shapes:
            continue
        # closing joins pieces closer than the gap: two instances never meet in one pixel
        half_gap = GAP_PX / 2.0
        benign = unary_union([g.buffer(half_gap, 4) for g in shapes]).buffer(-half_gap, 4)
        benign = to_merged(benign.simplify(OUTLINE_TOLERANCE_PX), placement, height)
        taken = [
            Polygon(poly)
            for inst in labelled
            if inst.view == view and taxonomy.by_name(inst.category).kind in ("lesion", "decoy")
            for poly in inst.polygons
        ]
        if taken:
            benign = benign.difference(unary_union(taken).buffer(GAP_PX, 3))
        for piece in sorted(_pieces(benign), key=lambda g: (g.bounds[1], g.bounds[0])):
            polys = polygon_points(piece)
            if polys:
                out.append(LabeledInstance(name, view, polys))
    return out


def _pieces(geometry: BaseGeometry) -> list[BaseGeometry]:
    if geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]
    return [p for g in getattr(geometry, "geoms", []) for p in _pieces(g)]


def _jitter(geometry: BaseGeometry, rng: np.random.Generator, sd_px: float) -> BaseGeometry:
    """An annotator's hand: the outline grown or shrunk a little and shifted a little."""
    moved = affinity.translate(geometry, *rng.normal(0.0, sd_px, size=2))
    return moved.buffer(float(rng.normal(0.0, sd_px)), 4)


def _instances(
    anatomy: Anatomy,
    metastases: list[Metastasis],
    hot_spots: list[HotSpot],
    merged: MergedScan,
    taxonomy: Taxonomy,
    drawn: dict[int, dict[str, BaseGeometry]] | None = None,
    annotator_noise: bool = False,
    rng: np.random.Generator | None = None,
) -> list[LabeledInstance]:
    """Labelled instances in the merged frame; ``drawn`` (lesion id -> view -> outline) replaces
    each lesion's fixed appearance, and ``annotator_noise`` jitters every outline."""
    height = merged.counts.shape[0]
    outlines = dict(anatomy.regions)
    outlines.update({f"kidney_{k}": g for k, g in anatomy.kidneys.items()})
    if annotator_noise and rng is not None:
        outlines = {k: _jitter(g, rng, 0.6) for k, g in outlines.items()}
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
            if drawn is None:
                if placement.view not in m.views():
                    continue
                shape = m.appearance(placement.view)
                polys = polygon_points(to_merged(shape, placement, height))[:1]
            else:
                shape = drawn.get(m.lesion_id, {}).get(placement.view)
                if shape is None:
                    continue
                if annotator_noise and rng is not None:
                    shape = _jitter(shape, rng, 0.5)
                shape = shape.simplify(OUTLINE_TOLERANCE_PX)
                # diffuse disease is drawn as several outlines of one lesion
                polys = polygon_points(to_merged(shape, placement, height))
            if polys:
                instances.append(
                    LabeledInstance(lesion_name, placement.view, polys, lesion_id=m.lesion_id)
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


def _benign_record(kind: str, outline: BaseGeometry, merged: MergedScan) -> dict:
    """A look-alike or cold spot in the truth: kind, centre and outline in each view."""
    height = merged.counts.shape[0]
    record: dict = {"kind": kind, "center_merged": {}, "polygons": {}}
    for placement in merged.placements:
        shape = outline if placement.view == "anterior" else mirror(outline)
        moved = to_merged(shape, placement, height)
        if moved.is_empty:
            continue
        c = moved.centroid
        record["center_merged"][placement.view] = [round(c.x, 2), round(c.y, 2)]
        record["polygons"][placement.view] = polygon_points(moved.simplify(OUTLINE_TOLERANCE_PX))
    return record


def _lesion_record(
    m: Metastasis, merged: MergedScan, views: list[str], outside: bool = False
) -> dict:
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
        "kind": m.kind,
        "outside_regions": bool(outside),
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


def write_phantom(
    phantom: Phantom, out: str | Path, one_view_per_file: bool = False, link: bool = False
) -> Path:
    """Write one phantom's DICOM, merged PNGs, Labelme JSON and truth JSON, and with ``link``
    its ``labelme/<id>.meta.json`` (study key, patient key, shifted date); returns the truth
    path."""
    from bsi_d2.io.base import COUNTS_SUFFIX, META_SUFFIX
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
    if link:
        meta = json.dumps(study_link(phantom.identity), indent=1) + "\n"
        (labelme_dir / f"{pid}{META_SUFFIX}").write_text(meta, encoding="utf-8")
    truth_path = truth_dir / f"{pid}.json"
    truth_path.write_text(json.dumps(phantom.truth, indent=1) + "\n", encoding="utf-8")
    return truth_path
