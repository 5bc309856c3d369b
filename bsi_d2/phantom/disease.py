"""The clinical range of skeletal metastases (the hard preset).

Counts from none to extensive with a long tail, sizes 5-60 mm and contrast skewed toward faint
(log-normal), lesions shaped by the bone they sit in (a rib lesion runs along the rib), confluent
clusters, contiguous vertebral disease, superscans (diffuse involvement of the axial skeleton),
lesions in bones outside the BSI regions and lytic (cold) lesions. Every draw comes from the
patient's own generator, so a patient is the same whatever else is generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from bsi_d2.phantom.anatomy import PIXEL_SPACING_MM, Anatomy
from bsi_d2.phantom.lesions import SITES, ColdSpot, Metastasis, blob, point_in
from bsi_d2.phantom.presets import Difficulty

OUTSIDE_SITES = {"forearm": 0.35, "tibia": 0.35, "femur_distal": 0.3}
# largest diameter per site, mm: a lesion cannot outgrow its bone by much
MAX_DIAMETER_MM = {"ribs": 30.0, "humerus_right": 40.0, "humerus_left": 40.0, "forearm": 25.0}
SIZE_MEDIAN_MM, SIZE_SIGMA = 14.0, 0.55  # log-normal, clipped to 5-60 mm
CONTRAST_MEDIAN, CONTRAST_SIGMA = 1.1, 0.75  # added uptake over bone, log-normal, 0.15-8
BONE_MARGIN_PX = 1.5  # a lesion may show a little past its bone's outline (blur, periosteum)
SUPERSCAN_SITES = {
    "spine": (0.5, 0.9),
    "pelvis": (0.4, 0.85),
    "ribs": (0.3, 0.7),
    "skull": (0.05, 0.35),
    "femurs": (0.2, 0.6),
    "humerus_right": (0.1, 0.5),
    "humerus_left": (0.1, 0.5),
}  # site -> range of the share of its bone that diffuse disease covers
EXTENSIVE_COUNT = 20  # more focal lesions than this: some bones also diffusely involved
EXTENSIVE_SITES = ("spine", "pelvis", "ribs", "femurs", "skull")


@dataclass
class Disease:
    """What one patient's skeleton carries."""

    metastases: list[Metastasis] = field(default_factory=list)
    cold: list[ColdSpot] = field(default_factory=list)
    superscan: bool = False
    pattern: str = "none"  # none, focal, diffuse_spine, extensive, superscan


class SiteShapes:
    """The bone of each lesion site as one shape (union of its parts), built when first asked."""

    def __init__(self, anatomy: Anatomy) -> None:
        self._parts: dict[str, list] = {}
        self._bones: dict[str, BaseGeometry] = {}
        for part in anatomy.parts:
            if part.site and not part.geometry.is_empty:
                self._parts.setdefault(part.site, []).append(part)

    def sites(self) -> list[str]:
        return list(self._parts)

    def parts(self, site: str) -> list:
        return self._parts.get(site, [])

    def bone(self, site: str) -> BaseGeometry:
        if site not in self._bones:
            parts = unary_union([p.geometry for p in self._parts[site]])
            self._bones[site] = parts.buffer(BONE_MARGIN_PX, 4)
        return self._bones[site]


def lesion_count(rng: np.random.Generator) -> int:
    """A quarter without metastases, most with few, a long tail of extensive disease."""
    u = rng.random()
    if u < 0.25:
        return 0
    if u < 0.52:
        return int(rng.integers(1, 4))
    if u < 0.70:
        return int(rng.integers(4, 7))
    if u < 0.90:
        return int(rng.integers(7, 21))
    return int(rng.integers(21, 61))


def lesion_diameter(site: str, rng: np.random.Generator) -> float:
    d = float(np.exp(rng.normal(math.log(SIZE_MEDIAN_MM), SIZE_SIGMA)))
    return float(np.clip(d, 5.0, MAX_DIAMETER_MM.get(site, 60.0)))


def lesion_contrast(rng: np.random.Generator) -> float:
    c = float(np.exp(rng.normal(math.log(CONTRAST_MEDIAN), CONTRAST_SIGMA)))
    return float(np.clip(c, 0.15, 8.0))


def sample_disease(
    anatomy: Anatomy,
    difficulty: Difficulty,
    rng: np.random.Generator,
    count: int | None = None,
) -> Disease:
    """Metastases (hot and lytic) of one patient under ``difficulty``; ``count`` overrides the
    number of focal lesions drawn."""
    shapes = SiteShapes(anatomy)
    disease = Disease()
    superscan = bool(rng.random() < difficulty.superscan_fraction)
    drawn = int(rng.integers(0, 11)) if superscan else lesion_count(rng)
    count = drawn if count is None else int(count)
    diffuse_spine = count > 0 and not superscan and rng.random() < difficulty.diffuse_spine_fraction
    if superscan:
        disease.superscan, disease.pattern = True, "superscan"
        for site, share in SUPERSCAN_SITES.items():
            if site in shapes.sites():
                m = diffuse_lesion(shapes, site, rng.uniform(*share), rng, "superscan")
                if m is not None:
                    _add(disease.metastases, m)
    elif count > EXTENSIVE_COUNT:
        # extensive disease: besides many focal lesions, confluent involvement of a few bones
        disease.pattern = "extensive"
        sites = [s for s in EXTENSIVE_SITES if s in shapes.sites()]
        for i in rng.choice(len(sites), size=int(rng.integers(1, 4)), replace=False):
            m = diffuse_lesion(shapes, sites[int(i)], rng.uniform(0.15, 0.5), rng, "extensive")
            if m is not None:
                _add(disease.metastases, m)
    elif diffuse_spine:
        disease.pattern = "diffuse_spine"
        m = contiguous_vertebrae(shapes, rng)
        if m is not None:
            _add(disease.metastases, m)
    elif count:
        disease.pattern = "focal"
    for _ in range(count):
        m = focal_lesion(shapes, difficulty, disease.metastases, rng)
        if m is not None:
            _add(disease.metastases, m)
    if rng.random() < difficulty.cold_fraction:
        for _ in range(int(rng.integers(1, 4))):
            c = lytic_lesion(shapes, rng)
            if c is not None:
                disease.cold.append(c)
    return disease


def _add(lesions: list[Metastasis], m: Metastasis) -> None:
    from dataclasses import replace

    lesions.append(replace(m, lesion_id=len(lesions) + 1))


def _site_weights(shapes: SiteShapes, difficulty: Difficulty) -> tuple[list[str], np.ndarray]:
    inside = [s for s in SITES if s in shapes.sites()]
    outside = [s for s in OUTSIDE_SITES if s in shapes.sites()]
    w_in = np.array([SITES[s] for s in inside])
    w_in *= (1.0 - difficulty.outside_fraction) / w_in.sum()
    w_out = np.array([OUTSIDE_SITES[s] for s in outside])
    if outside:
        w_out *= difficulty.outside_fraction / w_out.sum()
    weights = np.concatenate([w_in, w_out])
    return inside + outside, weights / weights.sum()


def focal_lesion(
    shapes: SiteShapes,
    difficulty: Difficulty,
    placed: list[Metastasis],
    rng: np.random.Generator,
) -> Metastasis | None:
    """One focal (or confluent) lesion on a bone drawn by site frequency, shaped by that bone."""
    sites, weights = _site_weights(shapes, difficulty)
    for _attempt in range(30):
        site = sites[int(rng.choice(len(sites), p=weights))]
        parts = shapes.parts(site)
        areas = np.array([p.geometry.area for p in parts])
        part = parts[int(rng.choice(len(parts), p=areas / areas.sum()))]
        center = point_in(part.geometry, rng)
        diameter = lesion_diameter(site, rng)
        radius = diameter / 2.0 / PIXEL_SPACING_MM
        depth = float(rng.uniform(*part.depth))
        confluent = bool(rng.random() < difficulty.confluent_fraction)
        if _collides(center, radius, depth, placed, difficulty.overlap_allowed):
            continue
        if confluent:
            pieces = [blob(center, radius, rng)]
            for _ in range(int(rng.integers(1, 4))):
                a = rng.uniform(0.0, 2.0 * math.pi)
                off = radius * rng.uniform(0.6, 1.2)
                c = (center[0] + off * math.cos(a), center[1] + off * math.sin(a))
                pieces.append(blob(c, radius * rng.uniform(0.5, 0.9), rng))
            outline = unary_union(pieces)
        else:
            outline = blob(center, radius, rng)
        outline = _largest(outline.intersection(shapes.bone(site)))
        if outline is None or outline.area < 2.0:
            continue
        return Metastasis(
            lesion_id=0,
            site=site,
            center=(float(outline.centroid.x), float(outline.centroid.y)),
            depth=depth,
            diameter_mm=float(2.0 * math.sqrt(outline.area / math.pi) * PIXEL_SPACING_MM),
            intensity=lesion_contrast(rng),
            outline=outline,
            kind="confluent" if confluent else "focal",
        )
    return None


def _collides(center, radius, depth, placed: list[Metastasis], overlap_allowed: bool) -> bool:
    """Lesions at one depth do not overlap (they would be one lesion); at different depths they
    may, where overlap is allowed: in projection they lie over each other."""
    for m in placed:
        if m.kind in ("superscan", "extensive", "diffuse_spine"):
            continue  # focal lesions on top of diffuse disease are allowed
        if overlap_allowed and abs(m.depth - depth) > 0.3:
            continue
        r = m.diameter_mm / 2.0 / PIXEL_SPACING_MM
        if math.dist(center, m.center) < 0.9 * (radius + r):
            return True
    return False


def diffuse_lesion(
    shapes: SiteShapes, site: str, share: float, rng: np.random.Generator, kind: str
) -> Metastasis | None:
    """Diffuse disease covering about ``share`` of a site's bone: a union of many blobs over it."""
    bone = shapes.bone(site)
    x0, y0, x1, y1 = bone.bounds
    target = share * bone.area
    pieces: list[BaseGeometry] = []
    covered: BaseGeometry = Point(0, 0).buffer(0)
    for _ in range(200):
        if covered.area >= target:
            break
        r = rng.uniform(5.0, 14.0)
        c = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
        if not bone.contains(Point(c)):
            continue
        pieces.append(blob(c, r, rng))
        covered = unary_union(pieces).intersection(bone)
    if covered.is_empty:
        return None
    depths = [p.depth for p in shapes.parts(site)]
    return Metastasis(
        lesion_id=0,
        site=site,
        center=(float(covered.centroid.x), float(covered.centroid.y)),
        depth=float(np.mean([sum(d) / 2.0 for d in depths])),
        diameter_mm=float(2.0 * math.sqrt(covered.area / math.pi) * PIXEL_SPACING_MM),
        intensity=float(rng.uniform(0.6, 1.6)),
        outline=covered,
        kind=kind,
    )


def contiguous_vertebrae(shapes: SiteShapes, rng: np.random.Generator) -> Metastasis | None:
    """Disease of 3-10 neighbouring vertebral bodies, as one lesion of uneven extent."""
    vertebrae = sorted(shapes.parts("spine"), key=lambda p: p.geometry.centroid.y)
    if len(vertebrae) < 3:
        return None
    n = int(rng.integers(3, min(10, len(vertebrae)) + 1))
    first = int(rng.integers(0, len(vertebrae) - n + 1))
    run = vertebrae[first : first + n]
    bodies = [p.geometry.buffer(0.8, 4) for p in run]
    outline = unary_union(bodies).buffer(1.2, 4).buffer(-1.2, 4)  # bridge the disc spaces
    return Metastasis(
        lesion_id=0,
        site="spine",
        center=(float(outline.centroid.x), float(outline.centroid.y)),
        depth=float(rng.uniform(*run[0].depth)),
        diameter_mm=float(2.0 * math.sqrt(outline.area / math.pi) * PIXEL_SPACING_MM),
        intensity=float(rng.uniform(0.7, 2.2)),
        outline=outline,
        kind="diffuse_spine",
    )


def lytic_lesion(shapes: SiteShapes, rng: np.random.Generator) -> ColdSpot | None:
    sites = [s for s in ("spine", "pelvis", "femurs", "skull") if s in shapes.sites()]
    if not sites:
        return None
    site = sites[int(rng.integers(0, len(sites)))]
    parts = shapes.parts(site)
    part = parts[int(rng.integers(0, len(parts)))]
    center = point_in(part.geometry, rng)
    radius = float(rng.uniform(10.0, 35.0)) / 2.0 / PIXEL_SPACING_MM
    outline = _largest(blob(center, radius, rng).intersection(shapes.bone(site)))
    if outline is None:
        return None
    return ColdSpot(
        "lytic",
        outline,
        reduction=float(rng.uniform(0.4, 0.85)),
        depth=float(rng.uniform(*part.depth)),
        lesion=True,
    )


def _largest(geometry: BaseGeometry) -> BaseGeometry | None:
    """The geometry itself if it is one piece, else its largest polygon (a lesion is one)."""
    if geometry.is_empty:
        return None
    if geometry.geom_type == "Polygon":
        return geometry
    polys = [g for g in getattr(geometry, "geoms", []) if g.geom_type == "Polygon"]
    return max(polys, key=lambda g: g.area) if polys else None
