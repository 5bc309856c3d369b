"""Labelme annotation files: read and validate, rasterise shapes, group them into instances, find
the annotated image, and write files in Labelme's own format.

Rasterisation has ONE definition, :func:`labelme_instances` (and :func:`shape_to_mask` for a
single shape). It follows COCO's continuous pixel coordinates (pixel ``(r, c)`` covers
``[c, c + 1) x [r, r + 1)``) and uses pycocotools through :mod:`bsi_d2.structures.masks`, so a
polygon written to COCO decodes to exactly the pixels computed here. Labelme's own PIL drawing
also paints the outline, so its masks are up to one pixel wider; ours are COCO's.

Per shape type:

- ``polygon`` (and ``oriented_rectangle``): kept as is when valid; self-intersecting ones are
  repaired with ``shapely.make_valid`` (polygonal parts kept), zero-area ones dropped.
- ``rectangle``: the four corners of the box its two points (opposite corners) span, as a
  polygon; any other point count is an error, as in labelme, which asserts exactly two.
- ``circle``: a polygon through the circle with enough vertices that no chord strays more than
  0.05 px inside it (at least 32); it stays a polygon in COCO.
- ``mask``: a base64 PNG placed at the box's top-left corner, as RLE.
- ``point``, ``points``, ``line``, ``linestrip``: describe no area; reported and skipped.

Shapes up to 10 % of the image size beyond its border are clipped (and reported); further out,
the shape is an error. Every repair, skip and error is returned as a :class:`ShapeProblem`.

A key written twice in one JSON object (which labelme never writes) is an error, as a JSON reader
keeps only the last value: twice at the top level the file is unusable, twice inside a shape
that shape is left out.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from bsi_d2.io.base import COUNTS_SUFFIX as COUNTS_SUFFIX  # its home is bsi_d2.io.base
from bsi_d2.io.base import counts_path
from bsi_d2.io.files import atomic_path
from bsi_d2.io.png import png_bytes
from bsi_d2.structures.masks import (
    mask_to_rle,
    merge_rles,
    polygons_to_mask,
    polygons_to_rle,
    rle_area,
    rle_to_bbox,
    rle_to_mask,
)
from bsi_d2.taxonomy import Taxonomy, load_taxonomy

LABELME_VERSION = "5.5.0"  # the file-format generation we write; labelme 5.x and 6.x read it
AREA_SHAPE_TYPES = ("polygon", "rectangle", "circle", "mask", "oriented_rectangle")
NON_AREA_SHAPE_TYPES = ("point", "points", "line", "linestrip")
FAR_OUTSIDE_FRACTION = 0.10
CIRCLE_MAX_SAGITTA = 0.05  # px a chord of the circle polygon may fall inside the true circle
COPY_FORMATS = {"PNG": ".png", "TIFF": ".tif"}  # stored byte for byte
UNKNOWN_LABEL_POLICIES = ("error", "skip")
IGNORE_POLICIES = ("crowd", "drop")
# the flag on every file and shape the toolkit writes from a model's predictions; a Labelme user
# unticks it on a shape they corrected or confirmed, which makes that shape a human annotation
MODEL_MADE = "model_made"
_MODEL_SCORE = re.compile(r"\bscore\s+([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")

_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]|\\")


class LabelmeError(ValueError):
    """A Labelme file that cannot be used at all; the message names the file and the problem."""


class NotLabelmeError(LabelmeError):
    """Valid JSON that is not a Labelme annotation (no ``shapes`` and no ``imagePath``)."""


@dataclass(frozen=True)
class ShapeProblem:
    """One thing found while reading or rasterising a file's shapes.

    ``severity`` is ``error`` (bad input: the shape is left out), ``repair`` (the shape was
    changed or dropped to make it usable) or ``skipped`` (the shape carries no instance by design
    or by the user's choice).
    """

    severity: str
    code: str
    message: str
    shape: int | None = None
    label: str | None = None

    def to_dict(self, file: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {} if file is None else {"file": file}
        out.update({"shape": self.shape, "code": self.code, "message": self.message})
        if self.label is not None:
            out["label"] = self.label
        return out


@dataclass
class LabelmeShape:
    index: int  # position in the file's ``shapes`` list, used in every message
    label: str
    points: np.ndarray  # (N, 2) float64, x then y, as labelme stores them
    shape_type: str = "polygon"
    group_id: int | None = None
    mask: np.ndarray | None = None  # (h, w) bool crop for shape_type "mask"
    description: str = ""
    flags: dict[str, bool] = field(default_factory=dict)

    @property
    def model_made(self) -> bool:
        """Whether the shape still carries the ticked :data:`MODEL_MADE` flag."""
        return self.flags.get(MODEL_MADE) is True

    @property
    def model_score(self) -> float | None:
        """The model's score written in the description (``model score 0.873``), if any."""
        found = _MODEL_SCORE.search(self.description)
        return float(found.group(1)) if found else None


@dataclass
class LabelmeFile:
    path: Path
    shapes: list[LabelmeShape]
    image_path: str | None
    image_data: str | None  # base64, as stored
    height: int | None
    width: int | None
    version: str = ""
    flags: dict[str, Any] = field(default_factory=dict)
    problems: list[ShapeProblem] = field(default_factory=list)  # malformed shape entries

    @property
    def model_made(self) -> bool:
        """Whether the file-level :data:`MODEL_MADE` flag is ticked."""
        return self.flags.get(MODEL_MADE) is True


@dataclass
class LabelmeInstance:
    """One object: the shapes sharing (class, group_id), or one shape with group_id null.

    ``rle`` always holds the instance's mask; ``polygons`` holds COCO polygons that decode to
    exactly the same pixels, or None where polygons cannot (mask shapes, holes).
    """

    label: str  # the taxonomy class name, or the ignore label for ignore regions
    category_id: int | None  # None for an ignore region
    group_id: int | None
    shape_indices: tuple[int, ...]
    rle: dict[str, Any]
    polygons: list[list[float]] | None = None
    is_ignore: bool = False
    model_made: bool = False  # every one of its shapes still flagged model-made
    score: float | None = None  # the model's score of a model-made instance, where written

    def provenance(self) -> dict[str, Any]:
        """``{"model_made": True, "score": s}`` for a model-made instance (the score where
        known), ``{}`` for a human one: the keys its COCO annotation adds."""
        if not self.model_made:
            return {}
        return {MODEL_MADE: True, **({"score": self.score} if self.score is not None else {})}

    @property
    def segmentation(self) -> list[list[float]] | dict[str, Any]:
        return self.polygons if self.polygons is not None else self.rle

    @cached_property
    def area(self) -> int:
        return rle_area(self.rle)

    @cached_property
    def bbox(self) -> list[float]:
        return rle_to_bbox(self.rle)

    def mask(self) -> np.ndarray:
        return rle_to_mask(self.rle)


# -- reading --------------------------------------------------------------------------------------
class _RepeatedKeys(dict):
    """A JSON object that wrote some key more than once; holds the last value of each, as
    Python's json does, and ``repeated``: how often each such key was written."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated = {k: n for k, n in Counter(k for k, _ in pairs).items() if n > 1}


def _parse_json(text: str) -> tuple[Any, bool]:
    """The parsed JSON and whether any object in it wrote a key twice."""
    found_repeats = False

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found_repeats
        obj = dict(pairs)
        if len(obj) == len(pairs):  # the common case costs one dict and one length check
            return obj
        found_repeats = True
        return _RepeatedKeys(pairs)

    return json.loads(text, object_pairs_hook=keep_pairs), found_repeats


def _repeated_keys(value: Any, where: str = "") -> dict[str, int]:
    """Dotted path -> count of every key written more than once in ``value`` or below it."""
    found: dict[str, int] = {}
    if isinstance(value, dict):
        for key, count in getattr(value, "repeated", {}).items():
            found[where + key] = count
        for key, item in value.items():
            if isinstance(item, dict | list):
                found.update(_repeated_keys(item, f"{where}{key}."))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                found.update(_repeated_keys(item, where))
    return found


def _repeated_message(repeated: dict[str, int], where: str) -> str:
    keys = ", ".join(f"{key!r} ({count} times)" for key, count in repeated.items())
    plural = "s" if len(repeated) > 1 else ""
    return (
        f"duplicate key{plural} {keys} {where}: JSON readers keep only the last value, "
        "so which one is meant is unknown"
    )


def load_labelme(path: str | Path) -> LabelmeFile:
    """Read and validate a Labelme JSON file.

    Raises :class:`LabelmeError` for a file that cannot be used (empty, invalid JSON, a key
    written twice outside the shapes, no shape list, bad image size fields); malformed single
    shapes (a key written twice among them) are left out and listed in ``problems`` with their
    index.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelmeError(f"{path}: cannot read file: {err}") from err
    if not text.strip():
        raise LabelmeError(f"{path}: empty file")
    try:
        raw, has_repeats = _parse_json(text)
    except json.JSONDecodeError as err:
        raise LabelmeError(f"{path}: invalid JSON: {err}") from err
    except RecursionError:  # Python's parser gives up on deep nesting; labelme writes 4 levels
        raise LabelmeError(f"{path}: JSON nested too deeply to be a Labelme file") from None
    if not isinstance(raw, dict):
        raise NotLabelmeError(f"{path}: not a Labelme file: top level is {type(raw).__name__}")
    if "shapes" not in raw and "imagePath" not in raw:
        raise NotLabelmeError(f"{path}: not a Labelme file: no 'shapes' and no 'imagePath'")
    if has_repeats:
        repeated = dict(getattr(raw, "repeated", {}))
        for key, item in raw.items():
            if key != "shapes":
                repeated.update(_repeated_keys(item, f"{key}."))
        if repeated:
            raise LabelmeError(f"{path}: {_repeated_message(repeated, 'at the top level')}")
    shapes_raw = raw.get("shapes")
    if not isinstance(shapes_raw, list):
        raise LabelmeError(f"{path}: 'shapes' must be a list, got {type(shapes_raw).__name__}")
    height = _optional_size(raw, "imageHeight", path)
    width = _optional_size(raw, "imageWidth", path)
    image_path = raw.get("imagePath")
    if image_path is not None and not isinstance(image_path, str):
        raise LabelmeError(f"{path}: 'imagePath' must be a string")
    image_data = raw.get("imageData")
    if image_data is not None and not isinstance(image_data, str):
        raise LabelmeError(f"{path}: 'imageData' must be base64 text or null")

    shapes, problems = [], []
    for index, entry in enumerate(shapes_raw):
        repeated = _repeated_keys(entry) if has_repeats else {}
        if repeated:
            message = _repeated_message(repeated, "in the shape")
            problems.append(
                ShapeProblem("error", "duplicate_key", message, index, _label_of(entry))
            )
            continue
        try:
            shapes.append(_parse_shape(index, entry))
        except ValueError as err:
            problems.append(ShapeProblem("error", "bad_shape", str(err), index, _label_of(entry)))
    return LabelmeFile(
        path=path,
        shapes=shapes,
        image_path=image_path or None,
        image_data=image_data or None,
        height=height,
        width=width,
        version=str(raw.get("version", "")),
        flags=raw.get("flags") if isinstance(raw.get("flags"), dict) else {},
        problems=problems,
    )


def _optional_size(raw: dict[str, Any], key: str, path: Path) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise LabelmeError(f"{path}: '{key}' must be an integer, got {value!r}")
    if value <= 0:
        raise LabelmeError(f"{path}: '{key}' must be positive, got {value}")
    return int(value)


def _label_of(entry: Any) -> str | None:
    label = entry.get("label") if isinstance(entry, dict) else None
    return label if isinstance(label, str) else None


def _parse_shape(index: int, entry: Any) -> LabelmeShape:
    if not isinstance(entry, dict):
        raise ValueError(f"shape is {type(entry).__name__}, not an object")
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError("shape has no label")
    shape_type = entry.get("shape_type") or "polygon"  # old files omit it; labelme reads polygon
    if not isinstance(shape_type, str):
        raise ValueError(f"shape_type must be a string, got {shape_type!r}")
    points_raw = entry.get("points")
    if not isinstance(points_raw, list) or not points_raw:
        raise ValueError("points must be a non-empty list of [x, y]")
    try:
        points = np.asarray(points_raw)  # no dtype: strings must not pass as numbers
    except ValueError:
        points = np.asarray([None])
    if points.ndim != 2 or points.shape[1] != 2 or points.dtype.kind not in "iuf":
        raise ValueError(f"points must be [x, y] number pairs, got {points_raw!r:.80}")
    points = points.astype(np.float64)
    if not np.isfinite(points).all():
        raise ValueError(f"points must be finite, got {points_raw!r:.80}")
    group_id = entry.get("group_id")
    if group_id is not None and (isinstance(group_id, bool) or not isinstance(group_id, int)):
        raise ValueError(f"group_id must be an integer or null, got {group_id!r}")
    mask = None
    if shape_type == "mask":
        mask = _decode_mask(entry.get("mask"))
    return LabelmeShape(
        index=index,
        label=label,
        points=points,
        shape_type=shape_type,
        group_id=group_id,
        mask=mask,
        description=str(entry.get("description") or ""),
        flags=entry.get("flags") if isinstance(entry.get("flags"), dict) else {},
    )


def _decode_mask(data: Any) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, str) or not data:
        raise ValueError("mask shape has no base64 PNG under 'mask'")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=False))) as img:
            arr = np.asarray(img)
    except (binascii.Error, UnidentifiedImageError, OSError) as err:
        raise ValueError(f"mask is not a base64 PNG: {err}") from err
    if arr.ndim == 3:
        arr = arr.any(axis=2) if arr.shape[2] < 4 else arr[..., 3] > 0
    return arr.astype(bool)


# -- rasterisation --------------------------------------------------------------------------------
Piece = list  # a flat COCO polygon
RlePiece = dict  # a compressed RLE covering what polygons cannot (holes, masks)


def shape_to_mask(shape: LabelmeShape, height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask of one shape (empty where the shape carries no area)."""
    polygons, rles, _ = _shape_pieces(shape, height, width)
    rle = _union(polygons, rles, height, width)
    return rle_to_mask(rle)


def labelme_instances(
    labelme: LabelmeFile,
    taxonomy: Taxonomy | str | Path | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    label_map: Mapping[str, str] | None = None,
    unknown_labels: str = "error",
    ignore: str = "crowd",
) -> tuple[list[LabelmeInstance], list[ShapeProblem]]:
    """Group a file's shapes into instances and rasterise them; the converter's and the tests'
    single reference for what an annotation covers.

    Labels are mapped with ``label_map`` (case-insensitive keys), then resolved through the
    taxonomy's spellings. Unknown labels are errors (``unknown_labels="error"``) or skipped
    (``"skip"``); the taxonomy's ignore labels become ignore regions (``ignore="crowd"``) or are
    dropped (``"drop"``). ``height``/``width`` default to the file's imageHeight/imageWidth.
    An instance is model-made when every one of its shapes still has the :data:`MODEL_MADE`
    flag ticked: one shape a human drew or unticked makes the whole instance human.
    """
    if unknown_labels not in UNKNOWN_LABEL_POLICIES:
        raise ValueError(f"unknown_labels must be one of {UNKNOWN_LABEL_POLICIES}")
    if ignore not in IGNORE_POLICIES:
        raise ValueError(f"ignore must be one of {IGNORE_POLICIES}")
    taxonomy = load_taxonomy(taxonomy)
    height = height or labelme.height
    width = width or labelme.width
    if not height or not width:
        raise LabelmeError(f"{labelme.path}: image size unknown (no imageHeight/imageWidth)")
    mapping = {k.strip().casefold(): v for k, v in (label_map or {}).items()}

    problems: list[ShapeProblem] = []
    groups: dict[tuple[str, Any], dict[str, Any]] = {}
    for shape in labelme.shapes:
        label = mapping.get(shape.label.strip().casefold(), shape.label)
        if taxonomy.is_background_label(label):
            problems.append(_skip(shape, "background", "background label, not an instance"))
            continue
        is_ignore = taxonomy.is_ignore_label(label)
        if is_ignore and ignore == "drop":
            problems.append(_skip(shape, "ignore_dropped", "ignore region dropped (--ignore drop)"))
            continue
        class_def = None if is_ignore else taxonomy.resolve_label(label)
        if class_def is None and not is_ignore:
            message = f"label {shape.label!r} is not in taxonomy {taxonomy.name!r}"
            if unknown_labels == "error":
                problems.append(
                    ShapeProblem("error", "unknown_label", message, shape.index, shape.label)
                )
            else:
                problems.append(_skip(shape, "unknown_label", message + " (skipped)"))
            continue
        if shape.shape_type in NON_AREA_SHAPE_TYPES:
            problems.append(
                _skip(shape, "not_an_area", f"shape_type {shape.shape_type!r} describes no area")
            )
            continue
        if shape.shape_type not in AREA_SHAPE_TYPES:
            problems.append(
                ShapeProblem(
                    "error",
                    "bad_shape_type",
                    f"unknown shape_type {shape.shape_type!r}",
                    shape.index,
                    shape.label,
                )
            )
            continue
        polygons, rles, shape_problems = _shape_pieces(shape, height, width)
        problems.extend(shape_problems)
        if not polygons and not rles:
            continue
        name = "__ignore__" if is_ignore else class_def.name  # type: ignore[union-attr]
        key = (name, shape.group_id if shape.group_id is not None else ("shape", shape.index))
        group = groups.setdefault(
            key,
            {
                "polygons": [],
                "rles": [],
                "shapes": [],
                "made": [],
                "class": class_def,
                "label": label,
            },  # fmt: skip
        )
        group["polygons"].extend(polygons)
        group["rles"].extend(rles)
        group["shapes"].append(shape.index)
        group["made"].append(shape)

    instances = []
    for (_, group_key), group in groups.items():
        rle = _union(group["polygons"], group["rles"], height, width)
        if rle_area(rle) == 0:
            for index in group["shapes"]:
                problems.append(
                    ShapeProblem(
                        "repair", "empty", "covers no pixel; dropped", index, group["label"]
                    )
                )
            continue
        class_def = group["class"]
        model_made = all(shape.model_made for shape in group["made"])
        scores = [shape.model_score for shape in group["made"] if shape.model_score is not None]
        instances.append(
            LabelmeInstance(
                label=group["label"] if class_def is None else class_def.name,
                category_id=None if class_def is None else class_def.id,
                group_id=None if isinstance(group_key, tuple) else group_key,
                shape_indices=tuple(group["shapes"]),
                rle=rle,
                polygons=None if group["rles"] else group["polygons"],
                is_ignore=class_def is None,
                model_made=model_made,
                score=scores[0] if model_made and scores else None,
            )
        )
    return instances, problems


def _skip(shape: LabelmeShape, code: str, message: str) -> ShapeProblem:
    return ShapeProblem("skipped", code, message, shape.index, shape.label)


def _union(polygons: list[Piece], rles: list[RlePiece], height: int, width: int) -> dict:
    rle = polygons_to_rle(polygons, height, width)
    return merge_rles([rle, *rles]) if rles else rle


def _shape_pieces(
    shape: LabelmeShape, height: int, width: int
) -> tuple[list[Piece], list[RlePiece], list[ShapeProblem]]:
    """(COCO polygons, RLEs, problems) for one area shape; nothing for a rejected one."""

    def error(code: str, message: str) -> tuple[list, list, list[ShapeProblem]]:
        return [], [], [ShapeProblem("error", code, message, shape.index, shape.label)]

    points = np.asarray(shape.points, dtype=np.float64)
    kind = shape.shape_type
    if kind in ("polygon", "oriented_rectangle") and len(points) < 3:
        return error("too_few_points", f"{kind} has {len(points)} point(s), needs at least 3")
    if kind in ("rectangle", "circle", "mask") and len(points) < 2:
        return error("too_few_points", f"{kind} has {len(points)} point(s), needs 2")
    if kind == "circle" and len(points) != 2:
        return error("bad_points", f"circle needs 2 points (centre, rim), has {len(points)}")
    # labelme draws a rectangle from points[0] and points[1] only; boxing more would guess
    if kind == "rectangle" and len(points) != 2:
        message = f"rectangle has {len(points)} points, needs exactly 2 (opposite corners)"
        return error("bad_points", message)
    if kind == "mask":
        ring = points[:2]
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    elif kind == "circle":
        ring = _circle_ring(points[0], points[1])
    else:
        ring = points
    far = _far_outside(ring, height, width)  # the circle's outline, not just its two points
    if far:
        return error("far_outside", far)
    if kind == "mask":
        return _mask_pieces(shape, points, height, width)
    return _ring_pieces(shape, ring, height, width)


def _far_outside(points: np.ndarray, height: int, width: int) -> str:
    mx, my = FAR_OUTSIDE_FRACTION * width, FAR_OUTSIDE_FRACTION * height
    x, y = points[:, 0], points[:, 1]
    if (x < -mx).any() or (x > width + mx).any() or (y < -my).any() or (y > height + my).any():
        return (
            f"coordinates x {x.min():.1f}..{x.max():.1f}, y {y.min():.1f}..{y.max():.1f} lie more "
            f"than {FAR_OUTSIDE_FRACTION:.0%} beyond the {width} x {height} image"
        )
    return ""


def _circle_ring(centre: np.ndarray, rim: np.ndarray) -> np.ndarray:
    radius = float(np.hypot(*(rim - centre)))
    if radius <= CIRCLE_MAX_SAGITTA:
        n = 32
    else:
        n = max(32, math.ceil(math.pi / math.acos(1.0 - CIRCLE_MAX_SAGITTA / radius)))
    angles = np.arange(min(n, 1440)) * (2.0 * math.pi / min(n, 1440))
    ring = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.round(ring, 3)


def _ring_pieces(
    shape: LabelmeShape, ring: np.ndarray, height: int, width: int
) -> tuple[list[Piece], list[RlePiece], list[ShapeProblem]]:
    import shapely
    from shapely.geometry import Polygon, box

    problems: list[ShapeProblem] = []

    def note(severity: str, code: str, message: str) -> None:
        problems.append(ShapeProblem(severity, code, message, shape.index, shape.label))

    polygon = Polygon(ring)
    # a self-intersecting ring's signed areas may cancel, so area alone cannot judge degeneracy
    valid = shapely.is_valid(polygon)  # fewer than 3 distinct points is invalid too
    if valid and polygon.area <= 0.0:
        note("repair", "degenerate", f"{shape.shape_type} encloses no area; dropped")
        return [], [], problems
    parts = [polygon]
    changed = False
    if not valid:
        reason = shapely.is_valid_reason(polygon)
        parts = _polygonal_parts(shapely.make_valid(polygon))
        changed = True
        if not parts:
            note(
                "repair",
                "degenerate",
                f"{shape.shape_type} encloses no area ({reason}); dropped",
            )
            return [], [], problems
        note(
            "repair",
            "made_valid",
            f"invalid {shape.shape_type} ({reason}) repaired into {len(parts)} part(s)",
        )
    inside = (ring[:, 0] >= 0) & (ring[:, 0] <= width) & (ring[:, 1] >= 0) & (ring[:, 1] <= height)
    if not inside.all():
        frame = box(0.0, 0.0, float(width), float(height))
        parts = [p for part in parts for p in _polygonal_parts(part.intersection(frame))]
        changed = True
        if not parts:
            note("repair", "outside", "lies wholly outside the image; dropped")
            return [], [], problems
        note("repair", "clipped", f"{int((~inside).sum())} point(s) outside the image; clipped")
    if not changed:
        return [ring.ravel().tolist()], [], problems

    polygons: list[Piece] = []
    rles: list[RlePiece] = []
    for part in parts:
        exterior = np.asarray(part.exterior.coords)[:-1]
        if part.interiors:
            keep = polygons_to_mask([exterior.ravel().tolist()], height, width)
            holes = [np.asarray(r.coords)[:-1].ravel().tolist() for r in part.interiors]
            rles.append(mask_to_rle(keep & ~polygons_to_mask(holes, height, width)))
        elif len(exterior) >= 3:
            polygons.append(exterior.ravel().tolist())
    return polygons, rles, problems


def _polygonal_parts(geometry: Any) -> list:
    """The non-empty Polygons in any shapely geometry (lines and points left out)."""
    kind = geometry.geom_type
    if kind == "Polygon":
        return [geometry] if geometry.area > 0 else []
    if kind in ("MultiPolygon", "GeometryCollection"):
        return [p for g in geometry.geoms for p in _polygonal_parts(g)]
    return []


def _mask_pieces(
    shape: LabelmeShape, points: np.ndarray, height: int, width: int
) -> tuple[list[Piece], list[RlePiece], list[ShapeProblem]]:
    crop = shape.mask
    problems: list[ShapeProblem] = []
    if crop is None:
        return (
            [],
            [],
            [
                ShapeProblem(
                    "error", "bad_mask", "mask shape without a mask", shape.index, shape.label
                )
            ],
        )
    # labelme stores the crop's box by its first and last pixel, truncated to int
    (x0, y0), (x1, y1) = points[:2].astype(int)
    if crop.shape != (y1 - y0 + 1, x1 - x0 + 1):
        problems.append(
            ShapeProblem(
                "repair",
                "mask_box",
                f"mask is {crop.shape[0]} x {crop.shape[1]} but its box is "
                f"{y1 - y0 + 1} x {x1 - x0 + 1}; placed at the box's top-left corner",
                shape.index,
                shape.label,
            )
        )
        y1, x1 = y0 + crop.shape[0] - 1, x0 + crop.shape[1] - 1
    full = np.zeros((height, width), dtype=bool)
    r0, c0 = max(y0, 0), max(x0, 0)
    r1, c1 = min(y1 + 1, height), min(x1 + 1, width)
    if r1 > r0 and c1 > c0:
        full[r0:r1, c0:c1] = crop[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    if (r0, c0, r1, c1) != (y0, x0, y1 + 1, x1 + 1):
        problems.append(
            ShapeProblem(
                "repair",
                "clipped",
                "mask extends past the image; clipped",
                shape.index,
                shape.label,
            )
        )
    if not full.any():
        problems.append(
            ShapeProblem(
                "repair", "empty", "mask covers no pixel; dropped", shape.index, shape.label
            )
        )
        return [], [], problems
    return [], [mask_to_rle(full)], problems


# -- the annotated image --------------------------------------------------------------------------
@dataclass
class LabelmeImage:
    """The image a Labelme file annotates, read without changing a pixel or the bit depth."""

    height: int
    width: int
    mode: str  # PIL mode, e.g. "I;16" for 16-bit counts
    format: str  # PIL format of the stored bytes, e.g. "PNG"
    source: Path | None = None  # the file on disk, when found
    data: bytes | None = None  # embedded imageData bytes, when no file was found
    counts_source: Path | None = None  # sibling "<stem>" + COUNTS_SUFFIX with raw counts

    @property
    def suffix(self) -> str:
        """ ".png" or ".tif": what :meth:`write` stores."""
        if self.format in COPY_FORMATS:
            return COPY_FORMATS[self.format]
        return ".tif" if self.mode in ("I", "F", "I;32") else ".png"

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else self.source.read_bytes()  # type: ignore[union-attr]

    def array(self) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(self.read_bytes())) as img:
            return np.asarray(img)

    def write(self, stem: Path) -> Path:
        """Store as ``stem`` + :attr:`suffix`: PNG/TIFF bytes copied, anything else decoded and
        written losslessly in its own mode (never JPEG, never reduced to 8 bit)."""
        dest = stem.with_name(stem.name + self.suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.format in COPY_FORMATS:
            if self.source is not None:
                shutil.copyfile(self.source, dest)
            else:
                dest.write_bytes(self.data)  # type: ignore[arg-type]
            return dest
        from PIL import Image

        # decoded and re-encoded by Pillow in its own mode (palette, alpha, 32-bit): more than
        # the grey/RGB arrays bsi_d2.io.png writes
        with Image.open(io.BytesIO(self.read_bytes())) as img, atomic_path(dest) as tmp:
            img.load()
            img.save(tmp, format="TIFF" if self.suffix == ".tif" else "PNG")
        return dest


def image_candidates(labelme: LabelmeFile) -> list[Path]:
    """Where ``imagePath`` may point: as written (relative to the JSON or absolute), then, for a
    path from another machine (e.g. ``C:\\scans\\a.png``), its basename beside the JSON."""
    if not labelme.image_path:
        return []
    raw = labelme.image_path
    pure = PureWindowsPath(raw) if _WINDOWS_PATH.search(raw) else PurePosixPath(raw)
    here = labelme.path.parent
    out = []
    if isinstance(pure, PurePosixPath):
        out.append(Path(pure) if pure.is_absolute() else here / Path(pure))
    elif not pure.drive and not pure.root:
        out.append(here / Path(*pure.parts))
    if pure.name:
        out.append(here / pure.name)
    return list(dict.fromkeys(out))


def labelme_image(labelme: LabelmeFile) -> LabelmeImage:
    """Find and check the annotated image: the file ``imagePath`` names (see
    :func:`image_candidates`), else the embedded ``imageData``.

    Raises :class:`LabelmeError` when neither exists, the image cannot be decoded, or its size
    disagrees with imageHeight/imageWidth.
    """
    from PIL import Image, UnidentifiedImageError

    source = next((p for p in image_candidates(labelme) if p.is_file()), None)
    data = None
    if source is None:
        if not labelme.image_data:
            tried = ", ".join(str(p) for p in image_candidates(labelme)) or "no imagePath"
            raise LabelmeError(f"{labelme.path}: image not found ({tried}) and no imageData")
        try:
            data = base64.b64decode(labelme.image_data, validate=False)
        except (binascii.Error, ValueError) as err:
            raise LabelmeError(f"{labelme.path}: imageData is not base64: {err}") from err
    where = source if source is not None else "imageData"
    try:
        with Image.open(source if source is not None else io.BytesIO(data)) as img:  # type: ignore[arg-type]
            width, height, mode, fmt = img.width, img.height, img.mode, img.format or ""
            img.verify()  # checks the stored data (e.g. PNG checksums) without a full decode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise LabelmeError(f"{labelme.path}: cannot read image {where}: {err}") from err
    if (labelme.height, labelme.width) != (None, None) and (
        (labelme.height or height, labelme.width or width) != (height, width)
    ):
        raise LabelmeError(
            f"{labelme.path}: imageHeight x imageWidth {labelme.height} x {labelme.width} "
            f"disagrees with the image {where} ({height} x {width})"
        )
    counts = None
    if source is not None:
        sibling = counts_path(source)
        counts = sibling if sibling.is_file() else None
    return LabelmeImage(height, width, mode, fmt, source, data, counts)


# -- writing --------------------------------------------------------------------------------------
def labelme_shape(
    label: str,
    points: Iterable[Sequence[float]],
    shape_type: str = "polygon",
    group_id: int | None = None,
    *,
    description: str = "",
    flags: Mapping[str, bool] | None = None,
    score: float | None = None,
) -> dict[str, Any]:
    """One shape entry in Labelme's format (plain Python floats, JSON-ready). A model's
    ``score`` marks the shape model-made: the :data:`MODEL_MADE` flag ticked and, unless a
    description is given, ``model score 0.873`` as its description."""
    flags = dict(flags or {})
    if score is not None:
        flags[MODEL_MADE] = True
        description = description or f"model score {float(score):.3f}"
    return {
        "label": label,
        "points": [[float(x), float(y)] for x, y in points],
        "group_id": None if group_id is None else int(group_id),
        "description": description,
        "shape_type": shape_type,
        "flags": flags,
        "mask": None,
    }


def mask_shape(label: str, mask: np.ndarray, group_id: int | None = None) -> dict[str, Any]:
    """A full-image bool mask as a Labelme ``mask`` shape (the 1-bit PNG crop of its box)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_shape: the mask is empty")
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = png_bytes(np.asarray(mask[y0 : y1 + 1, x0 : x1 + 1], dtype=bool))
    shape = labelme_shape(label, [(x0, y0), (x1, y1)], "mask", group_id)
    shape["mask"] = base64.b64encode(crop).decode("ascii")
    return shape


def write_labelme(
    path: str | Path,
    image_path: str,
    height: int,
    width: int,
    shapes: Iterable[Mapping[str, Any]],
    *,
    flags: Mapping[str, bool] | None = None,
    model_made: bool = False,
) -> Path:
    """Write a Labelme JSON file as labelme itself does (``imageData`` null, so the image stays a
    separate file). ``shapes`` are dicts as made by :func:`labelme_shape` / :func:`mask_shape`;
    missing keys get labelme's defaults. ``model_made``: a model's predictions, so the file's
    :data:`MODEL_MADE` flag is ticked (its shapes say so themselves, see :func:`labelme_shape`)."""
    path = Path(path)
    flags = {**(flags or {}), **({MODEL_MADE: True} if model_made else {})}
    entries = []
    for shape in shapes:
        entry = labelme_shape(
            shape["label"],
            shape["points"],
            shape.get("shape_type", "polygon"),
            shape.get("group_id"),
            description=shape.get("description") or "",
            flags=shape.get("flags"),
        )
        entry["mask"] = shape.get("mask")
        entries.append(entry)
    payload = {
        "version": LABELME_VERSION,
        "flags": dict(flags or {}),
        "shapes": entries,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(labelme_json(payload), encoding="utf-8")
    return path


_POINTS_MARK = "\x00points{}\x00"  # stands for shape i's points while the rest is encoded
_SHAPE_INDENT = 6  # spaces before a shape's keys in labelme's indent-2 layout
INTEGER_REPR_LIMIT = 10**15  # whole floats below this print as "<int>.0" (1e16 as "1e+16")


def labelme_json(payload: Mapping[str, Any]) -> str:
    """``json.dumps(payload, indent=2)``, character for character, several times faster: the
    shapes' points (most of a file) are encoded by ``json``'s C encoder and laid out by string
    replacement, the rest by ``json.dumps`` itself. Falls back to ``json.dumps`` where a point is
    not a finite [x, y] float pair or a placeholder is ambiguous."""
    shapes = payload.get("shapes")
    if not isinstance(shapes, list) or not all(isinstance(s, dict) for s in shapes):
        return json.dumps(payload, indent=2)
    marks = [_POINTS_MARK.format(i) for i in range(len(shapes))]
    skeleton = {
        **payload,
        "shapes": [{**s, "points": m} for s, m in zip(shapes, marks, strict=True)],
    }
    text = json.dumps(skeleton, indent=2)
    laid_out = [_points_json(s.get("points"), _SHAPE_INDENT) for s in shapes]
    quoted = [json.dumps(m) for m in marks]
    if any(p is None for p in laid_out) or any(text.count(q) != 1 for q in quoted):
        return json.dumps(payload, indent=2)
    pieces, start = [], 0
    for mark, points_text in zip(quoted, laid_out, strict=True):
        at = text.index(mark, start)  # the marks appear in shape order
        pieces += [text[start:at], points_text]
        start = at + len(mark)
    pieces.append(text[start:])
    return "".join(pieces)


def _points_json(points: Any, indent: int) -> str | None:
    """``json.dumps`` of a list of [x, y] float pairs as it appears, indented by 2 from
    ``indent``, in an indent-2 document; None for anything else (or a NaN or infinite value).
    The compact C encoding writes each float as the indented encoder does (``float.__repr__``)
    and holds no bracket or comma but those between the numbers, which are replaced."""
    if not isinstance(points, list):
        return None
    if not points:
        return "[]"
    if not all(
        type(p) is list and len(p) == 2 and type(p[0]) is float and type(p[1]) is float
        for p in points
    ):
        return None
    outer, inner = "\n" + " " * (indent + 2), "\n" + " " * (indent + 4)
    xy, pair = f",{inner}", f"{outer}],{outer}["
    values = np.asarray(points, dtype=np.float64)
    small = bool((np.abs(values) < INTEGER_REPR_LIMIT).all())  # False for NaN
    whole = values.astype(np.int64) if small else values
    if small and np.array_equal(whole, values) and not (np.signbit(values) & (values == 0)).any():
        # pixel corners from traced contours: repr of a whole float below 1e16 is "<int>.0"
        xs, ys = map(str, whole[:, 0].tolist()), map(str, whole[:, 1].tolist())
        body = f".0{pair}{inner}".join(map(f".0{xy}".join, zip(xs, ys, strict=True))) + ".0"
    else:
        try:
            compact = json.dumps(points, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return None  # json writes NaN / Infinity where allowed: left to json.dumps
        body = compact[2:-2].replace("],[", "\x01").replace(",", xy)
        body = body.replace("\x01", f"{pair}{inner}")
    return f"[{outer}[{inner}{body}{outer}]\n{' ' * indent}]"
