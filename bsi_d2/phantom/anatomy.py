"""A parametric whole-body skeleton as shapely polygons in the anterior view's pixel frame.

Body frame: ``u`` lateral in pixels from the midline, positive towards the patient's left (the
viewer's right in the anterior view), ``v`` rows down from the vertex. Lengths scale with the
height in pixels ``H``; widths with ``w``, which grows more slowly than height and with build.
:func:`build_anatomy` places the body in a 1024 x 256 view (shift, small rotation); the posterior
view is its left-right mirror (:func:`mirror`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

VIEW_SHAPE = (1024, 256)  # rows, columns of one count view
PIXEL_SPACING_MM = 2.4
ARM_POSES = ("down", "away", "crossed")
ARM_REACH_LIMIT = 116.0  # px from the midline the hand may reach, so the body stays in the view

# outlines in body units (u in w, v in H); one-sided ones are the left, mirrored for the right
# fmt: off
SCAPULA = ((0.05, 0.196), (0.095, 0.19), (0.09, 0.212), (0.076, 0.285), (0.052, 0.236))
ILIUM = ((0.026, 0.478), (0.045, 0.456), (0.073, 0.452), (0.093, 0.463), (0.097, 0.484),
         (0.086, 0.505), (0.078, 0.522), (0.057, 0.516), (0.036, 0.5))
SACRUM = ((-0.027, 0.474), (0.027, 0.474), (0.02, 0.51), (0.006, 0.54), (-0.006, 0.54),
          (-0.02, 0.51))
BODY_OUTLINE = ((-0.1, 0.19), (0.1, 0.19), (0.112, 0.215), (0.104, 0.32), (0.092, 0.41),
                (0.114, 0.5), (0.112, 0.57), (-0.112, 0.57), (-0.114, 0.5), (-0.092, 0.41),
                (-0.104, 0.32), (-0.112, 0.215))
# fmt: on


@dataclass(frozen=True)
class Part:
    """One source of counts: a shape and its uptake per view, relative to normal bone (1.0)."""

    name: str
    geometry: BaseGeometry
    anterior: float
    posterior: float
    site: str | None = None  # where metastases may be placed (see lesions.SITES)
    depth: tuple[float, float] = (0.5, 0.5)  # lesion depth range, 0 anterior .. 1 posterior
    kind: str = "bone"  # bone, soft, organ
    layer: float | None = None  # depth of its mass for depth-dependent blur; None: mid of depth

    def in_view(self, view: str) -> tuple[BaseGeometry, float]:
        """This part's shape and uptake as ``view`` sees it (posterior: mirrored)."""
        if view == "anterior":
            return self.geometry, self.anterior
        return mirror(self.geometry), self.posterior

    @property
    def mass_depth(self) -> float:
        return float(sum(self.depth) / 2.0) if self.layer is None else float(self.layer)


@dataclass
class Anatomy:
    """All shapes of one body in the anterior view's pixel frame."""

    parts: list[Part]
    regions: dict[str, BaseGeometry]  # taxonomy-like key -> outline an annotator would draw
    kidneys: dict[str, BaseGeometry]  # "right"/"left" -> outline
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)  # (x, y) anterior


@dataclass(frozen=True)
class BodyParameters:
    height_cm: float
    build: float  # lateral scale, 1 = average
    arm_pose: str
    humerus_angle_deg: tuple[float, float]  # right, left abduction from vertical
    forearm_angle_deg: tuple[float, float]
    hand_target: tuple[float, float]  # crossed pose: (u in w, v in H) the hands rest over
    scoliosis: float  # lateral spine bow, fraction of w
    rotation_deg: float
    shift: tuple[float, float]  # (columns, rows)
    top_row: float  # row of the vertex before rotation
    leg_spread: float  # fraction of w added to knee/ankle separation
    habitus: float = 1.0  # soft-tissue girth, 1 = average

    def to_dict(self) -> dict:
        return {
            "height_cm": round(self.height_cm, 2),
            "build": round(self.build, 4),
            "arm_pose": self.arm_pose,
            "humerus_angle_deg": [round(a, 2) for a in self.humerus_angle_deg],
            "forearm_angle_deg": [round(a, 2) for a in self.forearm_angle_deg],
            "scoliosis": round(self.scoliosis, 4),
            "rotation_deg": round(self.rotation_deg, 3),
            "shift": [round(s, 2) for s in self.shift],
            "top_row": round(self.top_row, 2),
            "habitus": round(self.habitus, 3),
        }


def sample_body(
    rng: np.random.Generator,
    habitus_sd: float = 0.15,
    habitus_max: float = 1.5,
    habitus_mean: float = 1.1,
) -> BodyParameters:
    """Draw height, build, arm pose and placement."""
    height = float(np.clip(rng.normal(168.0, 10.0), 148.0, 196.0))
    build = float(np.clip(rng.normal(1.0, 0.07), 0.86, 1.16))
    pose = ARM_POSES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    if pose == "down":
        hum = (rng.uniform(3, 8), rng.uniform(3, 8))
        fore = (hum[0] - rng.uniform(0, 6), hum[1] - rng.uniform(0, 6))
    elif pose == "away":
        hum = (rng.uniform(9, 15), rng.uniform(9, 15))
        fore = (rng.uniform(8, 16), rng.uniform(8, 16))
    else:
        hum = (rng.uniform(1, 7), rng.uniform(1, 7))
        fore = (0.0, 0.0)
    height_px = height * 10.0 / PIXEL_SPACING_MM
    top = rng.uniform(30.0, max(31.0, VIEW_SHAPE[0] - 20.0 - height_px))
    return BodyParameters(
        height_cm=height,
        build=build,
        arm_pose=pose,
        humerus_angle_deg=(float(hum[0]), float(hum[1])),
        forearm_angle_deg=(float(fore[0]), float(fore[1])),
        hand_target=(float(rng.uniform(-0.01, 0.03)), float(rng.uniform(0.5, 0.545))),
        scoliosis=float(rng.normal(0.0, 0.004)),
        rotation_deg=float(rng.uniform(-3.0, 3.0)),
        shift=(float(rng.uniform(-6.0, 6.0)), 0.0),
        top_row=float(top),
        leg_spread=float(rng.uniform(-0.01, 0.015)),
        habitus=float(np.clip(rng.normal(habitus_mean, habitus_sd), 0.85, habitus_max)),
    )


# -- shape helpers (body frame) -------------------------------------------------------------


def ellipse(cx: float, cy: float, a: float, b: float, angle: float = 0.0, n: int = 36) -> Polygon:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = np.column_stack([a * np.cos(t), b * np.sin(t)])
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    rot = pts @ np.array([[c, s], [-s, c]])
    return Polygon(rot + [cx, cy])


def capsule(p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float) -> Polygon:
    """Convex hull of two discs: a tapered long-bone shaft."""
    return unary_union([Point(p0).buffer(r0, 8), Point(p1).buffer(r1, 8)]).convex_hull


def stroke(points: np.ndarray, radius: float) -> Polygon:
    return LineString(points).buffer(radius, 6)


def bezier(p0, p1, p2, n: int = 14) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def close_outline(geometry: BaseGeometry, distance: float) -> BaseGeometry:
    """Morphological closing and hole filling: the outline an annotator draws around a bone."""
    closed = geometry.buffer(distance, 8).buffer(-distance, 8)
    polys = list(getattr(closed, "geoms", [closed]))
    return unary_union([Polygon(p.exterior) for p in polys if not p.is_empty])


def mirror(geometry: BaseGeometry, width: int = VIEW_SHAPE[1]) -> BaseGeometry:
    """The posterior view's shape of an anterior-view shape: x -> width - x (pixel edges)."""
    return affinity.scale(geometry, xfact=-1.0, yfact=1.0, origin=(width / 2.0, 0.0))


# -- the body --------------------------------------------------------------------------------


def build_anatomy(
    body: BodyParameters, rng: np.random.Generator, detailed: bool = False
) -> Anatomy:
    """Skeleton, organs and soft tissue of one body, placed in the anterior view.

    ``detailed`` (the hard preset) adds facial bones, pedicles and spinous processes, vertebrae
    of uneven uptake, fainter anterior ribs, the depth of every part (for depth-dependent blur)
    and lesion sites outside the BSI regions (forearm, tibia, distal femur); without it the
    skeleton is the standard one, draw for draw.
    """
    H = body.height_cm * 10.0 / PIXEL_SPACING_MM
    w = 1.06 * body.build * math.sqrt(H * 700.0)
    parts: list[Part] = []
    regions: dict[str, list[BaseGeometry]] = {k: [] for k in _REGION_KEYS}
    kidneys: dict[str, BaseGeometry] = {}
    marks: dict[str, tuple[float, float]] = {}

    def P(u: float, v: float) -> tuple[float, float]:
        return (u * w, v * H)

    def outline(table, side: float = 1.0) -> Polygon:
        return Polygon([P(side * u, v) for u, v in table])

    def add(
        name, geom, ant, post, site=None, depth=(0.5, 0.5), kind="bone", region=None, layer=None
    ):
        if layer is None and detailed and site is None:
            layer = PART_DEPTH.get(name)
        parts.append(Part(name, geom, ant, post, site, depth, kind, layer))
        if region is not None:
            regions[region].append(geom)

    # skull: cranium with a brighter calvarial rim, face and mandible
    cranium = ellipse(0.0, 0.058 * H, 0.037 * w, 0.058 * H, 0.0, 48)
    add("cranium", cranium, 0.6, 0.65, site="skull", depth=(0.05, 0.95), region="skull")
    rim = cranium.difference(cranium.buffer(-0.009 * H))
    add("calvarium", rim, 0.5, 0.5)
    face = ellipse(0.0, 0.092 * H, 0.026 * w, 0.02 * H)
    add("face", face, 0.6, 0.25, region="skull")
    mandible = stroke(bezier(P(-0.027, 0.088), P(0.0, 0.148), P(0.027, 0.088)), 0.0045 * H)
    add("mandible", mandible, 0.7, 0.4, region="skull")
    if detailed:
        # orbits as rims, maxilla and the teeth-bearing arch, nasal bones: the face a reader sees
        for side in (-1.0, 1.0):
            orbit = ellipse(side * 0.013 * w, 0.079 * H, 0.0105 * w, 0.0085 * H)
            add("orbit", orbit.difference(orbit.buffer(-0.0022 * H)), 0.35, 0.1)
        maxilla = stroke(bezier(P(-0.022, 0.098), P(0.0, 0.112), P(0.022, 0.098)), 0.0055 * H)
        add("maxilla", maxilla, 0.55, 0.2, region="skull")
        add("nasal", capsule(P(0.0, 0.08), P(0.0, 0.095), 0.003 * w, 0.0045 * w), 0.3, 0.05)
        add("skull_base", ellipse(0.0, 0.1 * H, 0.03 * w, 0.008 * H), 0.2, 0.45)

    # spine: vertebral bodies with disc spaces along a gently bowed centreline
    v_top, v_bottom = 0.135, 0.475
    levels = [
        (0.135, 0.19, 6, 0.0085, 0.009),
        (0.19, 0.385, 12, 0.0095, 0.012),
        (0.385, 0.475, 5, 0.0135, 0.016),
    ]

    def centre(v: float) -> float:
        return body.scoliosis * w * math.sin(math.pi * (v - v_top) / (v_bottom - v_top))

    def half_width(v: float) -> float:
        for a, b, _, h0, h1 in levels:
            if v <= b:
                return (h0 + (h1 - h0) * (v - a) / (b - a)) * w
        return levels[-1][4] * w

    for a, b, count, _, _ in levels:
        step = (b - a) / count
        for i in range(count):
            vc = a + (i + 0.5) * step
            hw = half_width(vc)
            body_box = box(-hw, -0.36 * step * H, hw, 0.36 * step * H)  # discs between
            vert = affinity.translate(body_box.buffer(0.002 * H, 4), centre(vc), vc * H)
            if not detailed:
                add("vertebra", vert, 0.55, 1.0, site="spine", depth=(0.5, 0.85))
                continue
            level = float(rng.uniform(0.85, 1.15))
            add("vertebra", vert, 0.38 * level, 0.7 * level, site="spine", depth=(0.45, 0.7))
            for side in (-1.0, 1.0):  # pedicles and facets: the posterior view's double line
                pedicle = ellipse(centre(vc) + side * 0.75 * hw, vc * H, 0.3 * hw, 0.3 * step * H)
                add("pedicle", pedicle, 0.1 * level, 0.45 * level, layer=0.8)
            spinous = ellipse(centre(vc), (vc + 0.1 * step) * H, 0.22 * hw, 0.28 * step * H)
            add("spinous_process", spinous, 0.05 * level, 0.35 * level, layer=0.92)
    vs = np.linspace(v_top, v_bottom, 40)
    left = [(centre(v) - half_width(v) - 1.0, v * H) for v in vs]
    right = [(centre(v) + half_width(v) + 1.0, v * H) for v in vs[::-1]]
    regions["spine"].append(Polygon(left + right))
    marks["L5"] = (centre(0.465), 0.465 * H)

    # chest: ribs (posterior and anterior arcs), sternum, clavicles, scapulae
    chest_parts: list[BaseGeometry] = []
    for side in (-1.0, 1.0):
        for k in range(1, 13):
            t = (k - 1) / 11.0
            cage = w * (
                0.05
                + 0.035 * math.sin(0.5 * math.pi * min(t / 0.6, 1.0))
                - 0.008 * max(0.0, (t - 0.6) / 0.4)
            )
            vk = (0.19 + (k - 0.5) * 0.195 / 12.0) * H
            start = (side * 0.011 * w + centre(vk / H), vk)
            reach = cage if k <= 10 else cage * (0.85 if k == 11 else 0.7)
            lateral = (side * reach, vk + 0.03 * H)
            post_arc = bezier(start, (side * 0.65 * reach, vk - 0.006 * H), lateral)
            rib_r = 0.0026 * H * rng.uniform(0.85, 1.15)
            level = rng.uniform(0.8, 1.2)
            arc = stroke(post_arc, rib_r)
            add("rib_posterior", arc, 0.18 * level, 0.55 * level, site="ribs", depth=(0.75, 0.95))
            chest_parts.append(arc)
            marks[f"rib_{'right' if side < 0 else 'left'}_{k}"] = lateral
            if k <= 10:
                if k <= 7:
                    end = (side * 0.014 * w, (0.2 + (k - 1) * 0.014) * H)
                else:
                    end = (side * (0.03 + (k - 7) * 0.014) * w, (0.3 + (k - 7) * 0.02) * H)
                end = (end[0], max(end[1], lateral[1] + 0.012 * H))
                ctrl = (side * reach * 0.95, lateral[1] + 0.6 * (end[1] - lateral[1]) + 0.01 * H)
                front = stroke(bezier(lateral, ctrl, end), rib_r * 0.95)
                add(
                    "rib_anterior",
                    front,
                    (0.3 if detailed else 0.45) * level,
                    0.18 * level,
                    site="ribs",
                    depth=(0.05, 0.25),
                )
                chest_parts.append(front)
        clavicle = stroke(
            bezier(P(side * 0.014, 0.188), P(side * 0.05, 0.176), P(side * 0.094, 0.184)),
            0.0034 * H,
        )
        add("clavicle", clavicle, 0.7, 0.35, site="chest", depth=(0.05, 0.2))
        marks[f"sc_joint_{'right' if side < 0 else 'left'}"] = P(side * 0.016, 0.189)
        scapula = outline(SCAPULA, side)
        add("scapula", scapula, 0.12, 0.4, site="chest", depth=(0.8, 0.95))
        add("scapula_rim", scapula.difference(scapula.buffer(-0.004 * H)), 0.08, 0.3)
        chest_parts += [clavicle, scapula]
    sternum = unary_union(
        [
            ellipse(0.0, 0.2 * H, 0.016 * w, 0.011 * H),
            capsule(P(0.0, 0.212), P(0.0, 0.29), 0.009 * w, 0.007 * w),
        ]
    )
    add("sternum", sternum, 0.9, 0.2, site="chest", depth=(0.02, 0.12))
    chest_parts.append(sternum)
    regions["chest"].append(close_outline(unary_union(chest_parts), 0.012 * H))

    # arms: humerus, forearm bones and hand; the region is the humerus to mid-shaft
    for side, key, idx in ((-1.0, "humerus_right", 0), (1.0, "humerus_left", 1)):
        shoulder = P(side * 0.097, 0.2)
        hum_len, fore_len = 0.186 * H, 0.146 * H
        hum_a = body.humerus_angle_deg[idx]
        fore_a = body.forearm_angle_deg[idx]
        for _ in range(20):
            elbow, wrist, tip = _arm_points(
                body, shoulder, side, hum_a, fore_a, hum_len, fore_len, w, H
            )
            if abs(tip[0]) + 0.02 * w <= ARM_REACH_LIMIT and abs(elbow[0]) + 0.03 * w <= 118:
                break
            hum_a, fore_a = hum_a * 0.85, fore_a * 0.85
        head = Point(shoulder).buffer(0.0135 * H, 12)
        mid = ((shoulder[0] + elbow[0]) / 2.0, (shoulder[1] + elbow[1]) / 2.0)
        shaft = capsule(shoulder, elbow, 0.0075 * H, 0.0065 * H)
        add("humeral_head", head, 0.6, 0.6, site=key, depth=(0.3, 0.7))
        add("humerus", shaft, 0.5, 0.5)
        add("epicondyles", ellipse(elbow[0], elbow[1], 0.012 * H, 0.007 * H), 0.35, 0.35)
        regions[key].append(
            unary_union([head, capsule(shoulder, mid, 0.0075 * H, 0.007 * H)]).buffer(1.0, 6)
        )
        d = np.subtract(wrist, elbow) / fore_len
        normal = np.array([-d[1], d[0]]) * 0.0055 * H
        for sign in (-1.0, 1.0):
            add(
                "forearm",
                capsule(
                    tuple(np.add(elbow, sign * normal)),
                    tuple(np.add(wrist, sign * normal)),
                    0.0038 * H,
                    0.0032 * H,
                ),
                0.45,
                0.45,
                site="forearm" if detailed else None,
                depth=(0.35, 0.65),
            )
        carpus = Point(np.add(wrist, d * 0.012 * H)).buffer(0.01 * H, 8)
        add("hand", carpus, 0.5, 0.5)
        for f in (-1.5, -0.5, 0.5, 1.5):
            base = np.add(wrist, d * 0.02 * H + np.array([-d[1], d[0]]) * f * 0.006 * H)
            add("finger", stroke(np.array([base, base + d * 0.055 * H]), 0.0022 * H), 0.35, 0.35)
        marks[f"wrist_{key[8:]}"] = tuple(np.add(wrist, d * 0.005 * H))
        marks[f"elbow_{key[8:]}"] = elbow
        marks[f"shoulder_{key[8:]}"] = shoulder
        marks[f"hand_{key[8:]}"] = tuple(np.add(wrist, d * 0.05 * H))
        marks[f"_arm_{key[8:]}"] = (elbow, wrist)

    # pelvis: iliac wings, acetabula, pubic and ischial rami, sacrum
    pelvis_parts: list[BaseGeometry] = []
    for side in (-1.0, 1.0):
        wing = outline(ILIUM, side)
        add("ilium", wing, 0.3, 0.38, site="pelvis", depth=(0.35, 0.8))
        crest = stroke(
            np.array(
                [
                    P(side * 0.03, 0.47),
                    P(side * 0.06, 0.452),
                    P(side * 0.094, 0.466),
                    P(side * 0.09, 0.5),
                ]
            ),
            0.003 * H,
        )
        add("iliac_crest", crest, 0.35, 0.35)
        acetabulum = Point(P(side * 0.072, 0.523)).buffer(0.015 * H, 10)
        add("acetabulum", acetabulum, 0.45, 0.4, site="pelvis", depth=(0.3, 0.6))
        rami = unary_union(
            [
                capsule(P(side * 0.066, 0.528), P(side * 0.009, 0.545), 0.0045 * H, 0.005 * H),
                capsule(P(side * 0.068, 0.532), P(side * 0.057, 0.56), 0.006 * H, 0.0065 * H),
                capsule(P(side * 0.057, 0.56), P(side * 0.011, 0.553), 0.004 * H, 0.004 * H),
            ]
        )
        add("pubis_ischium", rami, 0.55, 0.4, site="pelvis", depth=(0.1, 0.4))
        pelvis_parts += [wing, acetabulum, rami]
        add(
            "si_joint",
            stroke(np.array([P(side * 0.022, 0.478), P(side * 0.018, 0.51)]), 0.004 * H),
            0.15,
            0.35,
        )
        marks[f"si_joint_{'right' if side < 0 else 'left'}"] = P(side * 0.02, 0.494)
        marks[f"hip_{'right' if side < 0 else 'left'}"] = P(side * 0.072, 0.523)
    sacrum = outline(SACRUM)
    add("sacrum", sacrum, 0.35, 0.85, site="pelvis", depth=(0.75, 0.9))
    pelvis_parts.append(sacrum)
    regions["pelvis"].append(close_outline(unary_union(pelvis_parts), 0.012 * H))

    # legs: femurs (region: head to mid-shaft), patellae, tibiae, fibulae, feet
    for side in (-1.0, 1.0):
        spread = body.leg_spread * side
        head_c = P(side * 0.072, 0.523)
        knee = P(side * 0.05 + spread, 0.71)
        ankle = P(side * 0.046 + 1.6 * spread, 0.958)
        shaft_top = P(side * 0.092, 0.545)
        mid = ((shaft_top[0] + knee[0]) / 2.0, (shaft_top[1] + knee[1]) / 2.0)
        fem_head = Point(head_c).buffer(0.0125 * H, 10)
        neck = capsule(head_c, P(side * 0.097, 0.535), 0.0065 * H, 0.0075 * H)
        trochanter = Point(P(side * 0.099, 0.54)).buffer(0.0095 * H, 8)
        add("femoral_head", fem_head, 0.62, 0.55, site="femurs", depth=(0.3, 0.6))
        add("femoral_neck", neck.union(trochanter), 0.55, 0.55, site="femurs", depth=(0.3, 0.7))
        add("femur", capsule(shaft_top, knee, 0.0085 * H, 0.0075 * H), 0.5, 0.5)
        if detailed:  # the distal half, outside the femurs region: a site for lesions only
            lower = capsule(mid, knee, 0.008 * H, 0.0075 * H)
            add("femur_distal", lower, 0.0, 0.0, site="femur_distal", depth=(0.35, 0.65))
        add(
            "femur_proximal",
            capsule(shaft_top, mid, 0.0085 * H, 0.008 * H),
            0.0,
            0.0,
            site="femurs",
            depth=(0.35, 0.65),
        )
        regions["femurs"].append(
            unary_union(
                [fem_head, neck, trochanter, capsule(shaft_top, mid, 0.0085 * H, 0.008 * H)]
            ).buffer(1.0, 6)
        )
        add("condyles", ellipse(knee[0], knee[1] + 0.004 * H, 0.016 * w, 0.01 * H), 0.55, 0.55)
        add("patella", ellipse(knee[0], knee[1] - 0.006 * H, 0.008 * w, 0.008 * H), 0.45, 0.1)
        add(
            "tibia",
            capsule((knee[0], knee[1] + 0.015 * H), ankle, 0.0095 * H, 0.006 * H),
            0.5,
            0.45,
            site="tibia" if detailed else None,
            depth=(0.15, 0.45),
        )
        add(
            "fibula",
            capsule(
                (knee[0] + side * 0.012 * w, knee[1] + 0.02 * H),
                (ankle[0] + side * 0.01 * w, ankle[1]),
                0.0028 * H,
                0.0025 * H,
            ),
            0.3,
            0.3,
        )
        add(
            "foot",
            ellipse(ankle[0] + side * 0.004 * w, ankle[1] + 0.02 * H, 0.016 * w, 0.024 * H),
            0.6,
            0.55,
        )
        marks[f"knee_{'right' if side < 0 else 'left'}"] = knee
        marks[f"ankle_{'right' if side < 0 else 'left'}"] = ankle

    # organs: kidneys (mostly seen posteriorly) and the bladder
    for side, key, dv in ((-1.0, "right", 0.008), (1.0, "left", -0.004)):
        kidney = ellipse(side * 0.042 * w, (0.408 + dv) * H, 0.018 * w, 0.031 * H, side * -12.0)
        kidneys[key] = kidney
        add(f"kidney_{key}", kidney, 0.06, 0.45, kind="organ")
        add(
            f"renal_cortex_{key}",
            kidney.difference(kidney.buffer(-0.004 * H)),
            0.02,
            0.12,
            kind="organ",
        )
    marks["bladder"] = P(0.0, 0.516)

    # soft tissue: the body outline
    soft = [
        cranium.buffer(0.007 * H),
        capsule(P(0, 0.12), P(0, 0.195), 0.028 * w, 0.034 * w),
        outline(BODY_OUTLINE).buffer(0.01 * H + 0.035 * w * (body.habitus - 1.0)),
    ]
    for key in ("right", "left"):
        elbow, wrist = marks.pop(f"_arm_{key}")
        girth = body.habitus * w
        soft.append(capsule(marks[f"shoulder_{key}"], elbow, 0.025 * girth, 0.018 * girth))
        soft.append(capsule(elbow, wrist, 0.018 * girth, 0.012 * girth))
        soft.append(Point(marks[f"hand_{key}"]).buffer(0.016 * w))
        side = -1.0 if key == "right" else 1.0
        knee = marks[f"knee_{key}"]
        soft.append(capsule(P(side * 0.06, 0.55), knee, 0.05 * girth, 0.025 * girth))
        soft.append(capsule(knee, (knee[0] + side * 0.002 * w, 0.955 * H), 0.026 * w, 0.014 * w))
    add("soft_tissue", unary_union(soft), 0.3, 0.3, kind="soft")
    torso = Polygon([P(u, v) for u, v in ((-0.09, 0.2), (0.09, 0.2), (0.085, 0.5), (-0.085, 0.5))])
    add("torso", torso, 0.12, 0.12, kind="soft")

    # place: vertex at top_row, midline at the view's centre plus shift, small rotation
    x0 = VIEW_SHAPE[1] / 2.0 + body.shift[0]
    y0 = body.top_row + body.shift[1]
    pivot = (x0, y0 + 0.5 * H)

    def place(g: BaseGeometry) -> BaseGeometry:
        return affinity.rotate(affinity.translate(g, x0, y0), body.rotation_deg, origin=pivot)

    def place_point(p: tuple[float, float]) -> tuple[float, float]:
        q = place(Point(p))
        return (q.x, q.y)

    placed = [
        Part(p.name, place(p.geometry), p.anterior, p.posterior, p.site, p.depth, p.kind, p.layer)
        for p in parts
    ]
    return Anatomy(
        parts=placed,
        regions={k: place(unary_union(v)) for k, v in regions.items()},
        kidneys={k: place(v) for k, v in kidneys.items()},
        landmarks={k: place_point(v) for k, v in marks.items()},
    )


# depth of the mass of parts that carry no lesion site (0 anterior .. 1 posterior), detailed only
PART_DEPTH = {
    "calvarium": 0.5, "face": 0.12, "mandible": 0.1, "epicondyles": 0.5, "humerus": 0.5,
    "hand": 0.5, "finger": 0.5, "iliac_crest": 0.55, "si_joint": 0.78, "femur": 0.5,
    "condyles": 0.5, "patella": 0.05, "fibula": 0.6, "foot": 0.5, "scapula_rim": 0.9,
    "kidney_right": 0.75, "kidney_left": 0.75, "renal_cortex_right": 0.75,
    "renal_cortex_left": 0.75, "soft_tissue": 0.5, "torso": 0.5,
}  # fmt: skip
_REGION_KEYS = ("skull", "spine", "chest", "humerus_right", "humerus_left", "pelvis", "femurs")


def _arm_points(body, shoulder, side, hum_a, fore_a, hum_len, fore_len, w, H):
    a = math.radians(hum_a)
    elbow = (shoulder[0] + side * hum_len * math.sin(a), shoulder[1] + hum_len * math.cos(a))
    if body.arm_pose == "crossed":
        target = np.array([-side * body.hand_target[0] * w, body.hand_target[1] * H])
        d = target - np.array(elbow)
        d = d / np.linalg.norm(d)
    else:
        f = math.radians(fore_a)
        d = np.array([side * math.sin(f), math.cos(f)])
    wrist = (elbow[0] + d[0] * fore_len, elbow[1] + d[1] * fore_len)
    tip = (wrist[0] + d[0] * 0.075 * H, wrist[1] + d[1] * 0.075 * H)
    return elbow, wrist, tip
