"""Aligning two studies' skeletons, view by view, from the landmarks in their records. NumPy.

Each record's ``landmarks`` (:func:`bsi_d2.postprocess.analysis.skeleton_landmarks`) give per
view the centroid of each skeletal region found. The regions found in both studies are fitted
by least squares with a similarity transform (rotation, one scale, translation; Umeyama 1991) or
an affine one, mapping the earlier study's pixels onto the later one's; with fewer landmarks than
the transform needs, a translation. A landmark far off the fit (an arm held differently, a
region segmented badly) is dropped and the fit repeated, and a similarity that scales or turns
more than one patient on one camera can (the merge never scales) falls back to a translation.
The residual (RMS distance of the landmarks kept) says how well the skeletons agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bsi_d2.preprocess.merge import VIEW_ORDER

TRANSFORMS = ("similarity", "affine", "translation")
MIN_LANDMARKS = {"similarity": 3, "affine": 4, "translation": 1}  # fewer: a translation
OUTLIER_PX = 12.0  # a landmark further off the fit than this (and 3 x the median) is dropped
MAX_SCALE_CHANGE = 0.15  # a similarity scaling by more is implausible: translation instead
MAX_ROTATION_DEG = 10.0


@dataclass
class Alignment:
    """One view's mapping of earlier-study pixels [x, y] onto the later study's."""

    view: str
    transform: str  # "similarity", "affine", "translation" or "none" (identity: no landmarks)
    matrix: np.ndarray  # (2, 3): [x', y'] = matrix @ [x, y, 1]
    landmarks: list[str]  # the regions the fit used
    residual_px: float | None  # RMS distance of those landmarks after the mapping
    dropped: list[str] = field(default_factory=list)  # landmarks left out as outliers
    notes: list[str] = field(default_factory=list)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points [x, y] of the earlier study -> where they lie in the later one."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return points @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "transform": self.transform,
            "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
            "landmarks": list(self.landmarks),
            "residual_px": None if self.residual_px is None else round(self.residual_px, 2),
            "dropped": list(self.dropped),
            "notes": list(self.notes),
        }


def identity_alignment(view: str, note: str) -> Alignment:
    return Alignment(view, "none", np.hstack([np.eye(2), np.zeros((2, 1))]), [], None, [], [note])


def fit_translation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares translation taking ``source`` (N, 2) points onto ``target``."""
    shift = np.mean(target, axis=0) - np.mean(source, axis=0)
    return np.hstack([np.eye(2), shift[:, None]])


def fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares rotation + uniform scale + translation, without reflection
    (Umeyama's closed form); needs two or more distinct points."""
    src_mean, dst_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - src_mean, target - dst_mean
    u, s, vt = np.linalg.svd(dst.T @ src / len(source))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    variance = float(np.mean(np.sum(src**2, axis=1)))
    scale = float(np.trace(np.diag(s) @ d)) / variance if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def fit_affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares affine transform; needs three or more points not on a line."""
    design = np.hstack([source, np.ones((len(source), 1))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return solution.T


FITS = {"similarity": fit_similarity, "affine": fit_affine, "translation": fit_translation}


def _residuals(matrix: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    mapped = source @ matrix[:, :2].T + matrix[:, 2]
    return np.linalg.norm(mapped - target, axis=1)


def _implausible(matrix: np.ndarray) -> str | None:
    """Why a similarity is not one patient on one camera, or None."""
    linear = matrix[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    angle = float(np.degrees(np.arctan2(linear[1, 0], linear[0, 0])))
    if abs(scale - 1.0) > MAX_SCALE_CHANGE or abs(angle) > MAX_ROTATION_DEG:
        return f"the fitted transform scales by {scale:.2f} and turns by {angle:.1f} degrees"
    return None


def _robust_fit(
    kind: str, source: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matrix, indices kept, their residuals): the fit, refitted without its worst landmark
    while that one lies off it and enough landmarks would remain to judge the rest."""
    keep = np.arange(len(source))
    while True:
        matrix = FITS[kind](source[keep], target[keep])
        residuals = _residuals(matrix, source[keep], target[keep])
        worst = int(np.argmax(residuals))
        limit = max(OUTLIER_PX, 3.0 * float(np.median(residuals)))
        if len(keep) - 1 < max(MIN_LANDMARKS[kind], 3) or residuals[worst] <= limit:
            return matrix, keep, residuals
        keep = np.delete(keep, worst)


def fit_landmarks(
    source: np.ndarray,
    target: np.ndarray,
    names: list[str],
    view: str,
    transform: str = "similarity",
) -> Alignment:
    """The :class:`Alignment` of matched landmark points (N, 2) [x, y], ``names`` for each;
    see the module docstring for the fall-backs."""
    if transform not in FITS:
        raise ValueError(f"transform {transform!r}: choose one of {', '.join(TRANSFORMS)}")
    source = np.asarray(source, dtype=np.float64).reshape(-1, 2)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    if len(source) == 0:
        return identity_alignment(view, "no skeletal region found in both studies")
    notes: list[str] = []
    kind = transform
    if len(source) < MIN_LANDMARKS[kind]:
        notes.append(f"{len(source)} landmark(s): translation instead of {kind}")
        kind = "translation"
    matrix, keep, residuals = _robust_fit(kind, source, target)
    if kind == "similarity" and (why := _implausible(matrix)):
        notes.append(f"{why}: translation instead")
        kind = "translation"
        matrix, keep, residuals = _robust_fit(kind, source, target)
    dropped = [names[i] for i in range(len(names)) if i not in set(keep.tolist())]
    if dropped:
        notes.append(f"left out as off the fit: {', '.join(dropped)}")
    residual = float(np.sqrt(np.mean(residuals**2)))
    return Alignment(view, kind, matrix, [names[i] for i in keep], residual, dropped, notes)


def align_view(
    earlier: Mapping[str, Mapping[str, Any]],
    later: Mapping[str, Mapping[str, Any]],
    view: str,
    transform: str = "similarity",
) -> Alignment:
    """Align one view from two records' landmarks of it (region name -> its centroid etc.)."""
    names = [n for n in earlier if n in later and earlier[n].get("pixels") and later[n]["pixels"]]
    source = np.array([earlier[n]["centroid"] for n in names], dtype=np.float64)
    target = np.array([later[n]["centroid"] for n in names], dtype=np.float64)
    return fit_landmarks(source, target, names, view, transform)


def align_studies(
    earlier: Mapping[str, Any], later: Mapping[str, Any], transform: str = "similarity"
) -> dict[str, Alignment]:
    """Per view, the alignment of the ``earlier`` record's skeleton onto the ``later`` one's;
    the identity, with a note, where a record has no landmarks (written before they were)."""
    out = {}
    for view in VIEW_ORDER:
        first = (earlier.get("landmarks") or {}).get(view)
        second = (later.get("landmarks") or {}).get(view)
        if first is None or second is None:
            out[view] = identity_alignment(view, "no landmarks in the record: not aligned")
        else:
            out[view] = align_view(first, second, view, transform)
    return out
