"""The set of classes, their Labelme spellings, colours and BSI weights, read from a data file.

A taxonomy is a YAML or JSON file (see ``resources/taxonomy/default.yaml``) or a plain Labelme
``labels.txt``; the built-in ones go by name (:data:`BUILT_IN`: ``default``, and ``benign``, the
default plus a benign hot-spot decoy). Everything that needs classes takes a :class:`Taxonomy`;
nothing hard-codes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

KINDS = ("region", "decoy", "lesion", "other")
VIEWS = ("anterior", "posterior")
DEFAULT_NAME = "default"
BENIGN_NAME = "benign"  # the label of the benign hot-spot class, and its built-in taxonomy
BUILT_IN = (DEFAULT_NAME, BENIGN_NAME)  # names of the files in resources/taxonomy/


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ClassDef:
    id: int
    name: str
    kind: str
    labels: tuple[str, ...]
    color: tuple[int, int, int]
    bone: str | None = None
    view: str | None = None
    flip: str | None = None
    report: str = ""
    exclude_from_burden: bool = False  # e.g. bladder: subtracted from BSTBI's denominator

    @property
    def is_region(self) -> bool:
        return self.kind == "region"

    @property
    def is_lesion(self) -> bool:
        return self.kind == "lesion"

    @property
    def is_decoy(self) -> bool:
        return self.kind == "decoy"


@dataclass(frozen=True)
class Taxonomy:
    name: str
    classes: tuple[ClassDef, ...]
    weights: dict[str, float] = field(default_factory=dict)
    weights_source: str = ""
    ignore_labels: tuple[str, ...] = ("__ignore__",)
    background_labels: tuple[str, ...] = ("_background_",)
    source: str = ""

    # -- look-ups ---------------------------------------------------------------------------
    @cached_property
    def _by_id(self) -> dict[int, ClassDef]:
        return {c.id: c for c in self.classes}

    @cached_property
    def _by_name(self) -> dict[str, ClassDef]:
        return {c.name: c for c in self.classes}

    @cached_property
    def _by_label(self) -> dict[str, ClassDef]:
        table: dict[str, ClassDef] = {}
        for c in self.classes:
            for spelling in (c.name, *c.labels):
                table[spelling.casefold()] = c
        return table

    def by_id(self, class_id: int) -> ClassDef:
        return self._by_id[int(class_id)]

    def by_name(self, name: str) -> ClassDef:
        return self._by_name[name]

    def resolve_label(self, label: str) -> ClassDef | None:
        """The class a Labelme label spells, case-insensitively, or None if it is not known."""
        return self._by_label.get(label.strip().casefold())

    def is_ignore_label(self, label: str) -> bool:
        return label.strip().casefold() in {s.casefold() for s in self.ignore_labels}

    def is_background_label(self, label: str) -> bool:
        return label.strip().casefold() in {s.casefold() for s in self.background_labels}

    # -- views for detectron2-style metadata -----------------------------------------------
    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def thing_classes(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def thing_colors(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    @cached_property
    def id_to_contiguous(self) -> dict[int, int]:
        return {c.id: i for i, c in enumerate(self.classes)}

    @cached_property
    def contiguous_to_id(self) -> dict[int, int]:
        return {i: c.id for i, c in enumerate(self.classes)}

    def of_kind(self, kind: str) -> list[ClassDef]:
        return [c for c in self.classes if c.kind == kind]

    @property
    def region_classes(self) -> list[ClassDef]:
        return self.of_kind("region")

    @property
    def lesion_ids(self) -> list[int]:
        return [c.id for c in self.of_kind("lesion")]

    @property
    def decoy_ids(self) -> list[int]:
        return [c.id for c in self.of_kind("decoy")]

    @property
    def benign_class(self) -> ClassDef | None:
        """The decoy class the label ``benign`` spells (benign hot spots), or None."""
        cls = self.resolve_label(BENIGN_NAME)
        return cls if cls is not None and cls.is_decoy else None

    @property
    def benign_ids(self) -> list[int]:
        return [self.benign_class.id] if self.benign_class is not None else []

    @property
    def burden_exclude_ids(self) -> list[int]:
        return [c.id for c in self.classes if c.exclude_from_burden]

    @cached_property
    def flip_map(self) -> dict[int, int]:
        """Class id -> class id after a horizontal flip of the merged image (identity if absent)."""
        return {c.id: (self._by_name[c.flip].id if c.flip else c.id) for c in self.classes}

    def bone_weight(self, bone: str) -> float:
        return float(self.weights[bone])

    def metadata(self) -> dict[str, Any]:
        """Keyword arguments for detectron2's ``MetadataCatalog.get(name).set(...)``."""
        return {
            "thing_classes": self.thing_classes,
            "thing_colors": self.thing_colors,
            "thing_dataset_id_to_contiguous_id": dict(self.id_to_contiguous),
            "taxonomy": self.source or self.name,
        }

    def coco_categories(self) -> list[dict[str, Any]]:
        return [{"id": c.id, "name": c.name, "supercategory": c.kind} for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "classes": []}
        for c in self.classes:
            entry: dict[str, Any] = {
                "id": c.id,
                "name": c.name,
                "kind": c.kind,
                "labels": list(c.labels),
                "color": list(c.color),
                "report": c.report,
            }
            if c.exclude_from_burden:
                entry["exclude_from_burden"] = True
            for key in ("bone", "view", "flip"):
                if getattr(c, key):
                    entry[key] = getattr(c, key)
            out["classes"].append(entry)
        out["weights"] = dict(self.weights)
        out["weights_source"] = self.weights_source
        out["ignore_labels"] = list(self.ignore_labels)
        out["background_labels"] = list(self.background_labels)
        return out


def _built_in_path(name: str = DEFAULT_NAME) -> Path:
    return Path(str(resources.files("bsi_d2") / "resources" / "taxonomy" / f"{name}.yaml"))


def _default_path() -> Path:
    return _built_in_path(DEFAULT_NAME)


def load_taxonomy(spec: str | Path | Taxonomy | None = None) -> Taxonomy:
    """Load a taxonomy: ``None`` or a built-in name (:data:`BUILT_IN`; ``"default"`` for None)
    or a .yaml/.yml/.json/.txt path. A file in the working folder named like a built-in one
    needs a path with a folder or suffix (``./benign.yaml``)."""
    if isinstance(spec, Taxonomy):
        return spec
    if spec is None or str(spec) in BUILT_IN:
        path = _built_in_path(DEFAULT_NAME if spec is None else str(spec))
    else:
        path = Path(spec)
    if not path.is_file():
        raise TaxonomyError(f"{path}: taxonomy file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return _from_labels_txt(text, str(path))
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise TaxonomyError(f"{path}: cannot parse taxonomy: {err}") from err
    return taxonomy_from_dict(raw, str(path))


def taxonomy_from_dict(raw: Any, source: str = "<dict>") -> Taxonomy:
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list) or not raw["classes"]:
        raise TaxonomyError(f"{source}: a taxonomy needs a non-empty list under 'classes'")
    weights = {str(k): float(v) for k, v in (raw.get("weights") or {}).items()}
    classes = []
    for i, entry in enumerate(raw["classes"]):
        where = f"{source}: classes[{i}]"
        if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
            raise TaxonomyError(f"{where}: each class needs at least 'id' and 'name'")
        kind = entry.get("kind", "other")
        if kind not in KINDS:
            raise TaxonomyError(f"{where}: kind {kind!r} is not one of {KINDS}")
        color = tuple(int(v) for v in entry.get("color", _palette(i)))
        if len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise TaxonomyError(f"{where}: color must be three integers 0..255")
        view = entry.get("view")
        if view is not None and view not in VIEWS:
            raise TaxonomyError(f"{where}: view {view!r} is not one of {VIEWS}")
        bone = entry.get("bone")
        if kind == "region" and weights and bone is None:
            raise TaxonomyError(f"{where}: region class {entry['name']!r} needs a 'bone'")
        if bone is not None and bone not in weights:
            raise TaxonomyError(f"{where}: bone {bone!r} has no entry under 'weights'")
        classes.append(
            ClassDef(
                id=int(entry["id"]),
                name=str(entry["name"]),
                kind=kind,
                labels=tuple(str(s) for s in entry.get("labels", [])),
                color=color,  # type: ignore[arg-type]
                bone=bone,
                view=view,
                flip=entry.get("flip"),
                report=str(entry.get("report", entry["name"])),
                exclude_from_burden=bool(entry.get("exclude_from_burden", False)),
            )
        )
    _check_unique(classes, source)
    return Taxonomy(
        name=str(raw.get("name", Path(source).stem)),
        classes=tuple(sorted(classes, key=lambda c: c.id)),
        weights=weights,
        weights_source=str(raw.get("weights_source", "")),
        ignore_labels=tuple(raw.get("ignore_labels", ["__ignore__"])),
        background_labels=tuple(raw.get("background_labels", ["_background_"])),
        source=source,
    )


def _check_unique(classes: list[ClassDef], source: str) -> None:
    ids = [c.id for c in classes]
    if any(i <= 0 for i in ids) or len(set(ids)) != len(ids):
        raise TaxonomyError(f"{source}: class ids must be positive and unique, got {ids}")
    names = {c.name for c in classes}
    if len(names) != len(classes):
        raise TaxonomyError(f"{source}: class names must be unique")
    seen: dict[str, str] = {}
    for c in classes:
        for spelling in {s.casefold() for s in (c.name, *c.labels)}:
            if spelling in seen and seen[spelling] != c.name:
                raise TaxonomyError(
                    f"{source}: label {spelling!r} is claimed by both {seen[spelling]!r} "
                    f"and {c.name!r}"
                )
            seen[spelling] = c.name
        if c.flip is not None:
            partner = next((p for p in classes if p.name == c.flip), None)
            if partner is None:
                raise TaxonomyError(f"{source}: {c.name!r} flips to unknown class {c.flip!r}")
            if (partner.flip or partner.name) != c.name:
                raise TaxonomyError(
                    f"{source}: flip must be symmetric: {c.name!r} -> {c.flip!r} -> "
                    f"{partner.flip or partner.name!r}"
                )


def _from_labels_txt(text: str, source: str) -> Taxonomy:
    """Labelme's labels.txt: one label a line; ``__ignore__`` and ``_background_`` are skipped."""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    ignore = [n for n in names if n.startswith("__ignore") or n == "_ignore_"]
    background = [n for n in names if n in ("_background_", "__background__")]
    things = [n for n in names if n not in ignore and n not in background]
    if not things:
        raise TaxonomyError(f"{source}: labels.txt lists no class")
    classes = [{"id": i + 1, "name": n, "kind": "other"} for i, n in enumerate(things)]
    raw = {
        "name": Path(source).stem,
        "classes": classes,
        "ignore_labels": ignore or ["__ignore__"],
        "background_labels": background or ["_background_"],
    }
    return taxonomy_from_dict(raw, source)


def _palette(i: int) -> tuple[int, int, int]:
    base = [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
        (148, 103, 189),
        (140, 86, 75),
        (127, 127, 127),
    ]
    return base[i % len(base)]
