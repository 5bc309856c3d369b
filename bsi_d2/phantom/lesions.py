"""Metastases (the ground-truth lesions) and the benign hot spots that look like them.

A metastasis is a small blob at a depth inside a bone: it shows in the near view at full
strength and in the far view weaker and wider, or not at all when too deep. Benign look-alikes
(injection site, degenerative joints, bladder) are drawn but never labelled as lesions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from shapely import affinity
from shapely.geometry import Point, Polygon

from bsi_d2.phantom.anatomy import PIXEL_SPACING_MM, Anatomy, mirror
from bsi_d2.phantom.render import HOT_SIGMA_PX, Spot

# where metastases go, with how often (axial skeleton first, as in prostate and breast cancer)
SITES: dict[str, float] = {
    "spine": 0.30,
    "ribs": 0.22,
    "pelvis": 0.20,
    "femurs": 0.09,
    "skull": 0.08,
    "chest": 0.05,
    "humerus_right": 0.03,
    "humerus_left": 0.03,
}
# site -> taxonomy bone key where they differ; None: a bone outside every BSI region
SITE_BONE: dict[str, str | None] = {
    "ribs": "chest",
    "femur_distal": "femurs",  # the femur, but below the region's mid-shaft
    "forearm": None,
    "tibia": None,
}
MAX_LESIONS = 30
VISIBLE = 0.7  # least added uptake (relative to bone) that shows as a hot spot in a view
ATTENUATION = 0.85  # fraction of a lesion's counts lost crossing the whole body
FAR_SCALE = 1.2  # a far-view appearance is blurred wider


@dataclass(frozen=True)
class Metastasis:
    lesion_id: int
    site: str
    center: tuple[float, float]  # anterior view, pixels (x, y)
    depth: float  # 0 anterior surface .. 1 posterior surface
    diameter_mm: float
    intensity: float  # added uptake relative to normal bone, before depth weighting
    outline: Polygon  # anterior view
    kind: str = "focal"  # focal, confluent, diffuse_spine, extensive, superscan (hard preset)

    @property
    def bone(self) -> str | None:
        return SITE_BONE.get(self.site, self.site)

    def strength(self, view: str) -> float:
        d = self.depth if view == "anterior" else 1.0 - self.depth
        return self.intensity * (1.0 - ATTENUATION * d)

    def views(self) -> list[str]:
        return [v for v in ("anterior", "posterior") if self.strength(v) >= VISIBLE]

    def near_view(self) -> str:
        return "anterior" if self.depth <= 0.5 else "posterior"

    def appearance(self, view: str) -> Polygon:
        """The outline of this lesion as seen in ``view``, in that view's pixel frame."""
        shape = self.outline
        if view != self.near_view():
            shape = affinity.scale(shape, FAR_SCALE, FAR_SCALE, origin=Point(self.center))
        return mirror(shape) if view == "posterior" else shape

    def spot(self, view: str) -> Spot:
        sigma = HOT_SIGMA_PX if view == self.near_view() else HOT_SIGMA_PX + 0.8
        return Spot(self.appearance(view), self.strength(view), sigma)

    def source(self, view: str, sigma: float) -> Spot:
        """The lesion's true outline in ``view`` with the blur of its depth (hard preset): the
        far view's wider look comes from the blur, not from a scaled outline."""
        shape = mirror(self.outline) if view == "posterior" else self.outline
        return Spot(shape, self.strength(view), sigma)


def sample_lesion_count(rng: np.random.Generator) -> int:
    """About a quarter without metastases; the rest few, medium or extensive (seed 004)."""
    u = rng.random()
    if u < 0.25:
        return 0
    if u < 0.55:
        return int(rng.integers(1, 4))
    if u < 0.75:
        return int(rng.integers(4, 7))
    return int(rng.integers(7, MAX_LESIONS + 1))


def blob(
    center: tuple[float, float], radius: float, rng: np.random.Generator, n: int = 20
) -> Polygon:
    """An irregular roundish outline: an ellipse with a little low-order wobble."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    aspect = rng.uniform(0.7, 1.0)
    wobble = 1.0 + sum(
        rng.uniform(-0.08, 0.08) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3)
    )
    r = radius * wobble
    pts = np.column_stack([r * np.cos(t), aspect * r * np.sin(t)])
    a = rng.uniform(0.0, np.pi)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return Polygon(pts @ rot + center)


def sample_metastases(
    anatomy: Anatomy,
    count: int,
    rng: np.random.Generator,
    existing: Sequence[Metastasis] = (),
    first_id: int = 1,
) -> list[Metastasis]:
    """Up to ``count`` non-overlapping metastases on the bones their site allows, numbered from
    ``first_id`` and kept off the ``existing`` ones (a follow-up's new lesions)."""
    by_site: dict[str, list] = {}
    for part in anatomy.parts:
        if part.site and not part.geometry.is_empty:
            by_site.setdefault(part.site, []).append(part)
    sites = [s for s in SITES if s in by_site]
    weights = np.array([SITES[s] for s in sites])
    weights /= weights.sum()
    lesions: list[Metastasis] = []
    for _ in range(count):
        for _attempt in range(30):
            site = sites[int(rng.choice(len(sites), p=weights))]
            parts = by_site[site]
            areas = np.array([p.geometry.area for p in parts])
            part = parts[int(rng.choice(len(parts), p=areas / areas.sum()))]
            center = point_in(part.geometry, rng)
            diameter = float(rng.uniform(8.0, 34.0 if site in ("pelvis", "skull") else 26.0))
            radius = diameter / 2.0 / PIXEL_SPACING_MM
            if any(
                math.dist(center, m.center)
                < 0.9 * (radius + m.diameter_mm / 2.0 / PIXEL_SPACING_MM)
                for m in (*existing, *lesions)
            ):
                continue
            lesions.append(
                Metastasis(
                    lesion_id=first_id + len(lesions),
                    site=site,
                    center=center,
                    depth=float(rng.uniform(*part.depth)),
                    diameter_mm=diameter,
                    intensity=float(rng.uniform(1.3, 4.0)),
                    outline=blob(center, radius, rng),
                )
            )
            break
    return lesions


def point_in(geometry, rng: np.random.Generator) -> tuple[float, float]:
    x0, y0, x1, y1 = geometry.bounds
    for _ in range(200):
        p = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
        if geometry.contains(Point(p)):
            return p
    c = geometry.representative_point()
    return (c.x, c.y)


@dataclass(frozen=True)
class HotSpot:
    """A benign focal uptake, never labelled a lesion; the bladder is labelled as a decoy."""

    kind: str  # injection, degenerative_knee, degenerative_shoulder, degenerative_spine, bladder
    outline: Polygon  # anterior view
    anterior: float
    posterior: float
    sigma: float = HOT_SIGMA_PX
    depth: float = 0.5  # 0 anterior .. 1 posterior, for depth-dependent blur (hard preset)

    def spot(self, view: str, sigma: float | None = None) -> Spot:
        shape = mirror(self.outline) if view == "posterior" else self.outline
        value = self.anterior if view == "anterior" else self.posterior
        return Spot(shape, value, self.sigma if sigma is None else sigma)


@dataclass(frozen=True)
class ColdSpot:
    """Missing uptake: a lytic metastasis or a metal prosthesis (hard preset). ``reduction`` is
    the share of bone uptake removed inside ``outline`` (anterior view)."""

    kind: str  # lytic, prosthesis
    outline: Polygon
    reduction: float
    depth: float = 0.5
    lesion: bool = False  # a metastasis (lytic), though not drawn as a hot lesion


def bladder(
    center: tuple[float, float], height_px: float, rng: np.random.Generator, faint: bool = False
) -> HotSpot:
    """The filled bladder: an ellipse scaled to the body, hotter anteriorly; ``faint`` (a
    superscan, tracer taken up by bone) leaves a tenth to a quarter of its uptake."""
    fill = rng.uniform(0.6, 1.3)
    shape = Polygon(
        affinity.scale(
            Point(center).buffer(1.0, 16), 0.025 * height_px * fill, 0.018 * height_px * fill
        ).exterior
    )
    level = rng.uniform(1.6, 3.6) * (rng.uniform(0.08, 0.25) if faint else 1.0)
    return HotSpot("bladder", shape, level, level * rng.uniform(0.35, 0.6), sigma=2.5, depth=0.3)


def sample_hot_spots(anatomy: Anatomy, rng: np.random.Generator, height_px: float) -> list[HotSpot]:
    """Bladder always; injection site and degenerative joints sometimes."""
    marks = anatomy.landmarks
    spots: list[HotSpot] = [bladder(marks["bladder"], height_px, rng)]
    if rng.random() < 0.6:
        side = "right" if rng.random() < 0.5 else "left"
        where = marks[f"{'wrist' if rng.random() < 0.5 else 'elbow'}_{side}"]
        hot = rng.uniform(3.0, 10.0)
        spots.append(
            HotSpot(
                "injection",
                blob(where, rng.uniform(1.5, 3.0), rng),
                hot,
                hot * rng.uniform(0.4, 0.8),
            )
        )
    for kind, p, keys, radius, level in (
        ("degenerative_knee", 0.35, ("knee_right", "knee_left"), (4.0, 7.0), (0.5, 1.4)),
        (
            "degenerative_shoulder",
            0.25,
            ("shoulder_right", "shoulder_left"),
            (3.5, 6.0),
            (0.5, 1.2),
        ),
    ):
        if rng.random() < p:
            for key in keys:
                if rng.random() < 0.75:
                    s = rng.uniform(*level)
                    spots.append(
                        HotSpot(
                            kind,
                            blob(marks[key], rng.uniform(*radius), rng),
                            s,
                            s * rng.uniform(0.7, 1.1),
                        )
                    )
    if rng.random() < 0.3:
        x, y = marks["L5"]
        x += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 6.0)
        s = rng.uniform(0.6, 1.4)
        spots.append(
            HotSpot("degenerative_spine", blob((x, y), rng.uniform(3.0, 5.0), rng), 0.5 * s, s)
        )
    return spots
