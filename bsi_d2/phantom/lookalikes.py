"""Benign uptake a reader knows from metastases (the hard preset).

Rib fractures in a line, degenerative change at several spinal levels, sacro-iliac,
sterno-clavicular, shoulder and knee joints, the injection site with extravasation up the arm,
urine contamination, a catheter with its urine bag, and a cold hip prosthesis with uptake at its
rim. Each is recorded in the truth with its kind and never labelled as a lesion; the bladder is
labelled as a decoy, as in the standard preset. A superscan takes up tracer in bone at the
kidneys' and bladder's expense, so both are faint there.
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import LineString, Point
from shapely.ops import unary_union

from bsi_d2.phantom.anatomy import Anatomy, stroke
from bsi_d2.phantom.lesions import ColdSpot, HotSpot, bladder, blob

# kind -> probability that a patient shows it
PREVALENCE = {
    "injection": 0.6,
    "rib_fractures": 0.15,
    "degenerative_spine": 0.35,
    "si_joint": 0.25,
    "sc_joint": 0.2,
    "degenerative_shoulder": 0.3,
    "degenerative_knee": 0.35,
    "urine_contamination": 0.1,
    "catheter": 0.06,
    "prosthesis": 0.05,
}


def sample_lookalikes(
    anatomy: Anatomy, rng: np.random.Generator, height_px: float, superscan: bool = False
) -> tuple[list[HotSpot], list[ColdSpot]]:
    """The bladder always; each look-alike kind with its prevalence."""
    marks = anatomy.landmarks
    hot: list[HotSpot] = [bladder(marks["bladder"], height_px, rng, faint=superscan)]
    cold: list[ColdSpot] = []
    drawn = {kind: bool(rng.random() < p) for kind, p in PREVALENCE.items()}
    if drawn["injection"]:
        hot += injection(marks, rng)
    if drawn["rib_fractures"]:
        hot += rib_fractures(marks, rng)
    if drawn["degenerative_spine"]:
        hot += degenerative_spine(anatomy, rng)
    for kind, keys, radius, level, depth in (
        ("si_joint", ("si_joint_right", "si_joint_left"), (2.5, 4.0), (0.3, 0.9), 0.78),
        ("sc_joint", ("sc_joint_right", "sc_joint_left"), (2.0, 3.2), (0.5, 1.5), 0.1),
        ("degenerative_shoulder", ("shoulder_right", "shoulder_left"), (3.5, 6.0), (0.5, 1.2), 0.5),
        ("degenerative_knee", ("knee_right", "knee_left"), (4.0, 7.0), (0.5, 1.4), 0.4),
    ):
        if drawn[kind]:
            for key in keys:
                if rng.random() < 0.75:
                    s = rng.uniform(*level)
                    near = s if depth < 0.5 else s * rng.uniform(0.4, 0.7)
                    far = s * rng.uniform(0.4, 0.7) if depth < 0.5 else s
                    shape = blob(marks[key], rng.uniform(*radius), rng)
                    hot.append(HotSpot(kind, shape, near, far, depth=depth))
    if drawn["urine_contamination"]:
        hot.append(urine_contamination(marks, height_px, rng))
    if drawn["catheter"]:
        hot += catheter(marks, height_px, rng)
    if drawn["prosthesis"]:
        spots = prosthesis(anatomy, rng)
        cold.append(spots[0])
        hot.append(spots[1])
    return hot, cold


def injection(marks: dict, rng: np.random.Generator) -> list[HotSpot]:
    """The injection site, and in half of them tracer gone into the tissue up the forearm."""
    side = "right" if rng.random() < 0.5 else "left"
    where = marks[f"{'wrist' if rng.random() < 0.5 else 'elbow'}_{side}"]
    level = rng.uniform(3.0, 10.0)
    spots = [HotSpot("injection", blob(where, rng.uniform(1.5, 3.0), rng), level, level * 0.6)]
    if rng.random() < 0.5:
        elbow = np.asarray(marks[f"elbow_{side}"])
        tip = np.asarray(where)
        direction = elbow - tip if np.linalg.norm(elbow - tip) > 1.0 else np.array([0.0, -1.0])
        direction = direction / np.linalg.norm(direction)
        length = rng.uniform(8.0, 25.0)
        tail = stroke(np.array([tip, tip + direction * length]), rng.uniform(1.5, 3.0))
        s = level * rng.uniform(0.15, 0.35)
        spots.append(HotSpot("injection", tail, s, s * 0.6, sigma=2.5))
    return spots


def rib_fractures(marks: dict, rng: np.random.Generator) -> list[HotSpot]:
    """Two to four consecutive ribs of one side, struck in a vertical line (a fall)."""
    side = "right" if rng.random() < 0.5 else "left"
    first = int(rng.integers(3, 8))
    n = int(rng.integers(2, 5))
    along = rng.uniform(-6.0, 2.0)  # how far in from the lateral point of each rib
    sign = 1.0 if side == "right" else -1.0
    spots = []
    for k in range(first, min(first + n, 12)):
        x, y = marks[f"rib_{side}_{k}"]
        c = (x + sign * abs(along) + rng.normal(0.0, 0.8), y + rng.normal(0.0, 0.8))
        s = rng.uniform(1.5, 4.5)
        spots.append(HotSpot("rib_fractures", blob(c, rng.uniform(1.4, 2.4), rng), s, s, depth=0.5))
    return spots


def degenerative_spine(anatomy: Anatomy, rng: np.random.Generator) -> list[HotSpot]:
    """Osteophytes at the lateral margins of one to four lower lumbar or lower cervical levels."""
    vertebrae = sorted(
        (p for p in anatomy.parts if p.name == "vertebra"), key=lambda p: p.geometry.centroid.y
    )
    if not vertebrae:
        return []
    candidates = list(range(max(0, len(vertebrae) - 5), len(vertebrae))) + [3, 4, 5]
    levels = rng.choice(candidates, size=int(rng.integers(1, 5)), replace=False)
    spots = []
    for i in sorted(int(v) for v in levels):
        x0, y0, x1, y1 = vertebrae[i].geometry.bounds
        side = rng.choice([-1.0, 1.0])
        x = x1 + 0.5 if side > 0 else x0 - 0.5
        c = (x, y0 + (y1 - y0) * rng.uniform(0.2, 0.8))
        s = rng.uniform(0.5, 1.4)
        shape = blob(c, rng.uniform(2.0, 3.5), rng)
        spots.append(HotSpot("degenerative_spine", shape, 0.5 * s, s, depth=0.6))
    return spots


def urine_contamination(marks: dict, height_px: float, rng: np.random.Generator) -> HotSpot:
    """Urine on the skin or clothing: an irregular hot smear below the bladder."""
    bx, by = marks["bladder"]
    x = bx + rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 0.06) * height_px
    y = by + rng.uniform(0.03, 0.2) * height_px
    pieces = [blob((x, y), rng.uniform(2.0, 5.0), rng)]
    for _ in range(int(rng.integers(1, 4))):
        pieces.append(blob((x + rng.normal(0, 4), y + rng.normal(0, 6)), rng.uniform(1, 3), rng))
    s = rng.uniform(2.0, 8.0)
    return HotSpot("urine_contamination", unary_union(pieces), s, s, depth=0.02)


def catheter(marks: dict, height_px: float, rng: np.random.Generator) -> list[HotSpot]:
    """A urinary catheter down the inner thigh to a bag strapped to the calf."""
    side = "right" if rng.random() < 0.5 else "left"
    bx, by = marks["bladder"]
    kx, ky = marks[f"knee_{side}"]
    bag_c = (kx + rng.normal(0.0, 3.0), ky + rng.uniform(0.03, 0.09) * height_px)
    path = LineString([(bx, by), ((bx + kx) / 2.0, (by + ky) / 2.0), bag_c])
    s = rng.uniform(0.4, 1.2)
    tube = HotSpot("catheter", path.buffer(rng.uniform(0.8, 1.4), 4), s, s, depth=0.1)
    from shapely import affinity

    bag = affinity.scale(Point(bag_c).buffer(1.0, 12), rng.uniform(6, 10), rng.uniform(10, 16))
    level = rng.uniform(1.5, 5.0)
    return [tube, HotSpot("catheter", bag, level, level * 0.8, sigma=2.5, depth=0.05)]


def prosthesis(anatomy: Anatomy, rng: np.random.Generator) -> tuple[ColdSpot, HotSpot]:
    """A metal hip: the femoral head and stem cold, with some uptake at its rim."""
    side = "right" if rng.random() < 0.5 else "left"
    hx, hy = anatomy.landmarks[f"hip_{side}"]
    knee = anatomy.landmarks[f"knee_{side}"]
    stem_end = (hx + 0.25 * (knee[0] - hx), hy + 0.3 * (knee[1] - hy))
    head = Point(hx, hy).buffer(rng.uniform(5.5, 7.0), 12)
    stem = LineString([(hx, hy), stem_end]).buffer(rng.uniform(2.5, 3.5), 6)
    metal = unary_union([head, stem])
    rim = metal.buffer(2.0, 6).difference(metal)
    s = rng.uniform(0.3, 1.0)
    return (
        ColdSpot("prosthesis", metal, reduction=0.95, depth=0.5),
        HotSpot("prosthesis", rim, s, s, depth=0.5),
    )


def lookalike_kinds() -> tuple[str, ...]:
    return ("bladder", *PREVALENCE)


def _angle(a, b) -> float:
    return math.atan2(b[1] - a[1], b[0] - a[0])
