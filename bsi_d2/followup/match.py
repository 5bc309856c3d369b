"""Matching the lesions of two studies of one patient: new, no longer seen, persistent. NumPy/SciPy.

The earlier study's lesion centroids are mapped into the later study by the views' skeleton
alignments (:mod:`bsi_d2.followup.align`); per view, each earlier lesion is at some distance
from each later one seen in that view. Two lesions can be one when, in either view both are seen
in, they lie within the radius; among those, a one-to-one assignment (Hungarian algorithm)
minimises the summed distance, with a lesion in another region counted as further away, so a
lesion keeps its own region's counterpart. Decoy uptake (kidney, bladder) is not a lesion here,
as it is not one in the lesion count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsi_d2.followup.align import Alignment
from bsi_d2.postprocess.lesions import SITE_DECOY
from bsi_d2.postprocess.match import assign_pairs
from bsi_d2.preprocess.merge import VIEW_ORDER

DEFAULT_FOLLOWUP_RADIUS = 15.0  # pixels, about 35 mm at 2.2-2.4 mm per pixel
OTHER_REGION_COST = 0.25  # of the radius: the extra distance of a lesion in another region


def counted_lesions(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The record's lesions that count for the burden (bone or outside, not decoy uptake)."""
    return [les for les in record.get("lesions") or [] if les.get("site") != SITE_DECOY]


def has_positions(record: Mapping[str, Any]) -> bool:
    """Whether every counted lesion of the record has a centroid (records written before
    lesion positions were kept have none, and cannot be matched)."""
    return all(les.get("centroid") for les in counted_lesions(record))


def lesion_pixels(lesion: Mapping[str, Any]) -> int:
    return int(sum((lesion.get("pixels") or {}).values()))


@dataclass
class PersistentLesion:
    """One lesion seen in both studies."""

    earlier: dict[str, Any]
    later: dict[str, Any]
    views: list[str]  # the views in which the two lie within the radius
    distance_px: float  # in the closer of those views, after the alignment

    @property
    def pixel_change(self) -> int:
        return lesion_pixels(self.later) - lesion_pixels(self.earlier)

    def to_dict(self) -> dict[str, Any]:
        before, after = self.earlier.get("pixels") or {}, self.later.get("pixels") or {}
        shared = [v for v in VIEW_ORDER if before.get(v) and after.get(v)]
        return {
            "earlier_id": self.earlier["id"],
            "later_id": self.later["id"],
            "site_name": self.later.get("site_name"),
            "earlier_site_name": self.earlier.get("site_name"),
            "views": list(self.views),
            "distance_px": round(self.distance_px, 1),
            "pixels_earlier": lesion_pixels(self.earlier),
            "pixels_later": lesion_pixels(self.later),
            "pixel_change": self.pixel_change,
            "pixel_change_per_view": {v: int(after[v]) - int(before[v]) for v in shared},
        }


@dataclass
class LesionChanges:
    """The lesions of a pair of studies: new in the later, no longer seen, and persistent."""

    new: list[dict[str, Any]] = field(default_factory=list)  # the later study's lesions
    resolved: list[dict[str, Any]] = field(default_factory=list)  # the earlier study's
    persistent: list[PersistentLesion] = field(default_factory=list)
    radius_px: float = DEFAULT_FOLLOWUP_RADIUS

    def to_dict(self) -> dict[str, Any]:
        return {
            "radius_px": self.radius_px,
            "new": [lesion_summary(les) for les in self.new],
            "resolved": [lesion_summary(les) for les in self.resolved],
            "persistent": [p.to_dict() for p in self.persistent],
        }


def lesion_summary(lesion: Mapping[str, Any]) -> dict[str, Any]:
    """What a follow-up lists of one lesion: its id in its study, site, views, position, size."""
    return {
        "id": lesion["id"],
        "site_name": lesion.get("site_name"),
        "views": list(lesion.get("views") or []),
        "centroid": dict(lesion.get("centroid") or {}),
        "pixels": lesion_pixels(lesion),
    }


def view_distances(
    earlier: Sequence[Mapping[str, Any]],
    later: Sequence[Mapping[str, Any]],
    alignments: Mapping[str, Alignment],
) -> dict[str, np.ndarray]:
    """Per view, (N, M) distances in pixels between the earlier lesions' mapped centroids and
    the later ones'; infinite where either lesion is not seen in that view."""
    out = {}
    for view in VIEW_ORDER:
        dist = np.full((len(earlier), len(later)), np.inf)
        first = [i for i, les in enumerate(earlier) if view in (les.get("centroid") or {})]
        second = [j for j, les in enumerate(later) if view in (les.get("centroid") or {})]
        if first and second:
            points = np.array([earlier[i]["centroid"][view] for i in first], dtype=np.float64)
            mapped = alignments[view].apply(points)
            targets = np.array([later[j]["centroid"][view] for j in second], dtype=np.float64)
            block = np.linalg.norm(mapped[:, None, :] - targets[None, :, :], axis=2)
            dist[np.ix_(first, second)] = block
        out[view] = dist
    return out


def match_lesions(
    earlier_record: Mapping[str, Any],
    later_record: Mapping[str, Any],
    alignments: Mapping[str, Alignment],
    radius: float = DEFAULT_FOLLOWUP_RADIUS,
) -> LesionChanges | None:
    """The :class:`LesionChanges` from the earlier study to the later one (see the module
    docstring); None when a record's lesions carry no positions."""
    if not (has_positions(earlier_record) and has_positions(later_record)):
        return None
    earlier, later = counted_lesions(earlier_record), counted_lesions(later_record)
    per_view = view_distances(earlier, later, alignments)
    distance = np.min(np.stack([per_view[v] for v in VIEW_ORDER]), axis=0)
    allowed = distance <= radius
    other_region = np.array(
        [[a.get("site_name") != b.get("site_name") for b in later] for a in earlier], dtype=bool
    ).reshape(len(earlier), len(later))
    cost = np.where(allowed, distance, 0.0) + OTHER_REGION_COST * radius * other_region
    pairs = assign_pairs(cost, allowed, 0.5 * radius)
    persistent = [
        PersistentLesion(
            earlier=earlier[i],
            later=later[j],
            views=[v for v in VIEW_ORDER if per_view[v][i, j] <= radius],
            distance_px=float(distance[i, j]),
        )
        for i, j in sorted(pairs, key=lambda p: later[p[1]]["id"])
    ]
    paired_earlier = {i for i, _ in pairs}
    paired_later = {j for _, j in pairs}
    return LesionChanges(
        new=[les for j, les in enumerate(later) if j not in paired_later],
        resolved=[les for i, les in enumerate(earlier) if i not in paired_earlier],
        persistent=persistent,
        radius_px=float(radius),
    )
