"""A folder of Labelme annotations -> COCO instances per split, ready for detectron2's
``register_coco_instances``.

Output layout (other parts of bsi_d2 rely on it)::

    OUT/images/<relative path of the image, as .png/.tif>   (COCO file_name is relative to it)
    OUT/annotations/instances_all.json
    OUT/annotations/instances_{train,val,test}.json          (fixed split)
    OUT/annotations/fold{K}/instances_{train,val,test}.json  (with folds=N, K = 0..N-1)
    OUT/conversion_report.json

Image records carry ``has_lesion``, ``labelme_file`` and, where a ``<stem>.counts.png`` lay
beside the image, ``counts_file_name``. What a model made and no one has reviewed says so: the
annotation of an instance whose shapes all still carry Labelme's ``model_made`` flag has
``"model_made": true`` (and the model's ``score`` where its description gives one), the image of
a file whose file-level flag is ticked ``"model_made": true``; human ones carry neither key.
Images keep their pixels and bit depth. Instances come from
:func:`bsi_d2.io.labelme.labelme_instances`; an ignore region becomes one ``iscrowd: 1``
RLE annotation per category, so COCO evaluation ignores detections of any class inside it.
Image ids are the 1-based positions of the JSON files in sorted relative-path order;
``<stem>.meta.json`` companions are not Labelme files.

With ``group_by="patient"`` splits and folds keep each patient whole. A file's patient is the
``patient_key`` of its ``<stem>.meta.json`` (beside the JSON, else beside its image), as
``bsi-d2 preprocess`` writes it, or the ``group`` of its row in a ``file,group`` CSV. The report
records the grouping and the number of groups per split, never the groups' names.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bsi_d2.data.splits import SPLIT_NAMES, fixed_split, kfold_splits
from bsi_d2.io.base import COUNTS_SUFFIX, META_SUFFIX, meta_companion
from bsi_d2.io.labelme import (
    IGNORE_POLICIES,
    UNKNOWN_LABEL_POLICIES,
    LabelmeError,
    LabelmeImage,
    NotLabelmeError,
    labelme_image,
    labelme_instances,
    load_labelme,
)
from bsi_d2.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

STRATIFY_CHOICES = ("lesion",)
GROUP_FIELDS = {"patient": "patient_key"}  # --group-by choice -> its field in <stem>.meta.json
GROUPS_COLUMNS = ("file", "group")  # of a --groups CSV
LISTED = 5  # files named in a grouping error; the rest are counted
REPORT_NAME = "conversion_report.json"
SERIAL_BELOW = 16  # files; a process pool costs more than it saves on fewer


@dataclass
class ConversionReport:
    """What a conversion read, wrote and found wrong; saved as ``conversion_report.json``."""

    files_read: int = 0
    files_converted: int = 0
    images_written: int = 0
    counts_written: int = 0
    images_with_lesion: int = 0
    instances_per_class: dict[str, int] = field(default_factory=dict)
    ignore_regions: int = 0
    rle_instances: int = 0  # non-crowd instances stored as RLE (mask shapes, holes)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    skipped_shapes: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    grouping: dict[str, Any] = field(default_factory=dict)  # by, source, groups per split/fold
    folds: int = 0
    strict: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def mask_format(self) -> str:
        """detectron2's ``INPUT.MASK_FORMAT`` these annotations need: RLE needs "bitmask"."""
        return "bitmask" if self.rle_instances else "polygon"

    @property
    def exit_code(self) -> int:
        """1 when no file could be converted, or when ``strict`` and any input was bad; else 0."""
        return 1 if not self.files_converted or (self.strict and self.errors) else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mask_format": self.mask_format}

    def summary(self) -> str:
        classes = ", ".join(f"{k} {v}" for k, v in self.instances_per_class.items() if v)
        grouped = ""
        if self.grouping:
            per_split = ", ".join(str(n) for n in self.grouping["groups_per_split"].values())
            grouped = f" (by {self.grouping['by']}: {per_split} groups)"
        lines = [
            f"Labelme files read: {self.files_read}, converted: {self.files_converted}, "
            f"images written: {self.images_written} ({self.images_with_lesion} with lesions, "
            f"{self.counts_written} with raw counts)",
            f"instances: {sum(self.instances_per_class.values())} ({classes or 'none'}); "
            f"ignore regions: {self.ignore_regions}; mask format: {self.mask_format}",
            f"splits: {', '.join(f'{k} {v}' for k, v in self.splits.items())}{grouped}"
            + (f"; {self.folds} folds" if self.folds else ""),
            f"repairs: {len(self.repairs)}, skipped shapes: {len(self.skipped_shapes)}, "
            f"skipped files: {len(self.skipped_files)}, errors: {len(self.errors)}",
        ]
        if not self.files_converted:
            lines.append(f"no Labelme file could be converted ({len(self.errors)} error(s))")
        if self.unknown_labels:
            listed = ", ".join(f"{k!r} x{v}" for k, v in sorted(self.unknown_labels.items()))
            lines.append(
                f"labels not in the taxonomy: {listed} (use --map old=new or --unknown-labels skip)"
            )
        for err in self.errors[:10]:
            where = err["file"] + (f" shape {err['shape']}" if err.get("shape") is not None else "")
            lines.append(f"  error: {where}: {err['message']}")
        if len(self.errors) > 10:
            lines.append(f"  ... {len(self.errors) - 10} more errors in {REPORT_NAME}")
        return "\n".join(lines)


@dataclass
class _FileResult:
    """One Labelme file's conversion, computed in a worker process."""

    rel: str
    image: LabelmeImage | None = None
    image_name: str | None = None  # preferred OUT/images-relative name, without suffix
    annotations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # with "severity"
    ignore_regions: int = 0
    model_made: bool = False  # the file-level flag (bsi_d2.io.labelme.MODEL_MADE) is ticked
    error: str | None = None
    not_labelme: str | None = None


def _convert_file(
    path: Path,
    *,
    src: Path,
    taxonomy: Taxonomy,
    label_map: Mapping[str, str] | None,
    unknown_labels: str,
    ignore: str,
) -> _FileResult:
    rel = path.relative_to(src).as_posix()
    result = _FileResult(rel)
    try:
        labelme = load_labelme(path)
        image = labelme_image(labelme)
        instances, problems = labelme_instances(
            labelme,
            taxonomy,
            height=image.height,
            width=image.width,
            label_map=label_map,
            unknown_labels=unknown_labels,
            ignore=ignore,
        )
    except NotLabelmeError as err:
        result.not_labelme = _without_path(str(err), path)
        return result
    except LabelmeError as err:
        result.error = _without_path(str(err), path)
        return result
    except Exception as err:  # noqa: BLE001 - one broken file must not stop the batch
        result.error = f"unexpected {type(err).__name__}: {err}"
        return result
    for problem in [*labelme.problems, *problems]:
        result.problems.append({"severity": problem.severity, **problem.to_dict(rel)})
    result.image = image
    result.image_name = _image_name(image, path, src)
    result.model_made = labelme.model_made
    for inst in instances:
        record = {
            "segmentation": inst.rle if inst.is_ignore else inst.segmentation,
            "area": inst.area,
            "bbox": inst.bbox,
        }
        if inst.is_ignore:
            result.ignore_regions += 1
            for category_id in taxonomy.ids:
                result.annotations.append({"category_id": category_id, "iscrowd": 1, **record})
        else:
            result.annotations.append(
                {"category_id": inst.category_id, "iscrowd": 0, **record, **inst.provenance()}
            )
    return result


def _without_path(message: str, path: Path) -> str:
    """The message without its leading file name: the report names the file in its own field."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _image_name(image: LabelmeImage, json_path: Path, src: Path) -> str:
    """The image's path relative to ``src`` when it lies there, else the JSON's; no suffix."""
    if image.source is not None:
        try:
            rel = image.source.resolve().relative_to(src.resolve())
            return rel.with_suffix("").as_posix()
        except ValueError:
            pass
    return json_path.relative_to(src).with_suffix("").as_posix()


def find_labelme_files(src: str | Path, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """JSON files under ``src`` (recursive) in sorted relative-path order, leaving out hidden
    folders (``.ipynb_checkpoints`` copies) and ``exclude`` folders (e.g. the output folder when
    it lies inside ``src``)."""
    src = Path(src)
    excluded = [Path(e).resolve() for e in exclude]
    files = []
    for path in src.rglob("*"):
        if path.suffix.lower() != ".json" or path.name.lower().endswith(META_SUFFIX):
            continue
        if not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(src).parts[:-1]):
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(e) for e in excluded):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(src).as_posix())


def convert_labelme_folder(
    src: str | Path,
    out: str | Path,
    taxonomy: Taxonomy | str | Path | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    folds: int = 0,
    seed: int = 0,
    stratify: str | None = None,
    ignore: str = "crowd",
    unknown_labels: str = "error",
    label_map: Mapping[str, str] | None = None,
    strict: bool = False,
    workers: int | None = None,
    group_by: str | None = None,
    groups: str | Path | None = None,
) -> ConversionReport:
    """Convert every Labelme JSON under ``src`` into COCO datasets under ``out``.

    A broken file or shape is recorded in the report and the rest still converted; the
    report's :attr:`~ConversionReport.exit_code` is non-zero when no file could be converted and,
    with ``strict``, when anything was bad. ``workers`` processes (default: CPU count) share the
    files. ``group_by="patient"`` keeps each patient's files in one split and fold; ``groups``
    (a ``file,group`` CSV, implying ``group_by="patient"``) gives the patients instead of the
    ``<stem>.meta.json`` companions. Raises ``ValueError``, writing nothing, for unusable options
    (bad ratios, a ``label_map`` target not in the taxonomy, a bad CSV), for a converted file
    without a group, and for a missing ``src`` or one without any Labelme file.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ValueError(f"{src}: source folder not found")
    taxonomy = load_taxonomy(taxonomy)
    if groups is not None and group_by is None:
        group_by = "patient"
    _check_options(taxonomy, split, folds, stratify, ignore, unknown_labels, label_map, group_by)
    group_rows = read_groups_csv(groups) if groups is not None else None
    report = ConversionReport(
        strict=strict,
        folds=folds,
        options={
            "taxonomy": taxonomy.name,
            "split": list(split),
            "folds": folds,
            "seed": seed,
            "stratify": stratify,
            "ignore": ignore,
            "unknown_labels": unknown_labels,
            "label_map": dict(label_map or {}),
            "group_by": group_by,
            "groups": str(groups) if groups is not None else None,
        },
    )
    files = find_labelme_files(src, exclude=[out])
    report.files_read = len(files)
    work = partial(
        _convert_file,
        src=src,
        taxonomy=taxonomy,
        label_map=label_map,
        unknown_labels=unknown_labels,
        ignore=ignore,
    )
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    if workers == 1 or len(files) < SERIAL_BELOW:
        results = [work(path) for path in files]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunk = max(1, min(32, len(files) // (4 * workers)))
            results = list(pool.map(work, files, chunksize=chunk))
    if all(result.not_labelme for result in results):  # an empty dataset would pass for a result
        found = f"{len(files)} JSON file(s), none of them Labelme" if files else "no JSON file"
        raise ValueError(f"{src}: no Labelme files found ({found}); nothing written")
    group_of = None
    if group_by is not None:
        group_of = _file_groups(src, files, results, group_by, group_rows, groups, report)

    images_dir = out / "images"
    images, annotations = [], []
    used_names: dict[str, str] = {}
    class_counts = Counter({c.name: 0 for c in taxonomy.classes})
    unknown = Counter()
    names = {c.id: c.name for c in taxonomy.classes}
    lesion_ids = set(taxonomy.lesion_ids)
    for image_id, result in enumerate(results, start=1):
        if result.not_labelme:
            report.skipped_files.append({"file": result.rel, "message": result.not_labelme})
            continue
        for problem in result.problems:
            severity = problem.pop("severity")
            {"error": report.errors, "repair": report.repairs}.get(
                severity, report.skipped_shapes
            ).append(problem)
            if problem["code"] == "unknown_label":
                unknown[problem.get("label", "")] += 1
        if result.error:
            report.errors.append({"file": result.rel, "shape": None, "message": result.error})
            continue
        image = result.image
        assert image is not None and result.image_name is not None
        name = result.image_name + image.suffix
        if name in used_names:
            fallback = Path(result.rel).with_suffix("").as_posix() + image.suffix
            if fallback in used_names:
                report.errors.append(
                    {
                        "file": result.rel,
                        "shape": None,
                        "message": f"image {name} is already used by {used_names[name]}",
                    }
                )
                continue
            name = fallback
        used_names[name] = result.rel
        try:
            written = image.write(images_dir / name[: -len(image.suffix)])
            counts_name = None
            if image.counts_source is not None:
                counts_name = name[: -len(image.suffix)] + COUNTS_SUFFIX
                shutil.copyfile(image.counts_source, images_dir / counts_name)
                report.counts_written += 1
        except OSError as err:
            report.errors.append(
                {
                    "file": result.rel,
                    "shape": None,
                    "message": f"cannot write image: {err}",
                }
            )
            continue
        report.images_written += 1
        report.files_converted += 1
        has_lesion = any(
            a["category_id"] in lesion_ids and not a["iscrowd"] for a in result.annotations
        )
        report.images_with_lesion += int(has_lesion)
        record: dict[str, Any] = {
            "id": image_id,
            "file_name": written.relative_to(images_dir).as_posix(),
            "height": image.height,
            "width": image.width,
            "has_lesion": has_lesion,
            "labelme_file": result.rel,
        }
        if counts_name:
            record["counts_file_name"] = counts_name
        if result.model_made:
            record["model_made"] = True
        images.append(record)
        for ann in result.annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
            if not ann["iscrowd"]:
                class_counts[names[ann["category_id"]]] += 1
                report.rle_instances += isinstance(ann["segmentation"], dict)
        report.ignore_regions += result.ignore_regions
    report.instances_per_class = dict(class_counts)
    report.unknown_labels = dict(unknown)

    _write_annotations(
        out, images, annotations, taxonomy, split, folds, seed, stratify, group_of, report
    )
    (out / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


def _check_options(
    taxonomy: Taxonomy,
    split: Sequence[float],
    folds: int,
    stratify: str | None,
    ignore: str,
    unknown_labels: str,
    label_map: Mapping[str, str] | None,
    group_by: str | None,
) -> None:
    if len(split) != 3 or any(r < 0 for r in split) or sum(split) <= 0:
        raise ValueError(f"split must be three non-negative ratios (train val test), got {split}")
    if folds and folds < 3:
        raise ValueError(f"folds must be 0 (none) or at least 3, got {folds}")
    if stratify not in (None, *STRATIFY_CHOICES):
        raise ValueError(f"stratify must be None or one of {STRATIFY_CHOICES}, got {stratify!r}")
    if group_by not in (None, *GROUP_FIELDS):
        raise ValueError(f"group_by must be None or one of {tuple(GROUP_FIELDS)}, got {group_by!r}")
    if ignore not in IGNORE_POLICIES:
        raise ValueError(f"ignore must be one of {IGNORE_POLICIES}, got {ignore!r}")
    if unknown_labels not in UNKNOWN_LABEL_POLICIES:
        raise ValueError(f"unknown_labels must be one of {UNKNOWN_LABEL_POLICIES}")
    for old, new in (label_map or {}).items():
        if taxonomy.resolve_label(new) is None and not taxonomy.is_ignore_label(new):
            raise ValueError(
                f"label map {old}={new}: {new!r} is not a label of taxonomy {taxonomy.name!r}"
            )


def _write_annotations(
    out: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    taxonomy: Taxonomy,
    split: Sequence[float],
    folds: int,
    seed: int,
    stratify: str | None,
    group_of: Mapping[str, str] | None,
    report: ConversionReport,
) -> None:
    ann_dir = out / "annotations"
    if ann_dir.is_dir():  # stale folds or splits from an earlier run would mislead a trainer
        for old in ann_dir.glob("fold*/instances_*.json"):
            old.unlink()
        for old in ann_dir.glob("instances_*.json"):
            old.unlink()
    ann_dir.mkdir(parents=True, exist_ok=True)
    categories = taxonomy.coco_categories()
    info = {
        "description": "bsi_d2 Labelme conversion",
        "taxonomy": taxonomy.name,
        "seed": seed,
    }
    if group_of is not None:  # only then, so ungrouped output stays as it was
        info["group_by"] = report.options["group_by"]
    compact = json.JSONEncoder(separators=(",", ":")).encode
    # each image and its annotations are encoded once and reused by every split and fold
    image_text = {img["id"]: compact(img) for img in images}
    ann_text: dict[int, list[str]] = {}
    for ann in annotations:
        ann_text.setdefault(ann["image_id"], []).append(compact(ann))
    by_name = {img["file_name"]: img for img in images}
    keys = sorted(by_name)
    strata = [by_name[k]["has_lesion"] for k in keys] if stratify == "lesion" else None
    groups = None if group_of is None else [group_of[by_name[k]["labelme_file"]] for k in keys]
    head = f'{{"info":{compact(info)},"licenses":[],"categories":{compact(categories)},'

    def dump(path: Path, names: Sequence[str]) -> None:
        ids = sorted(by_name[n]["id"] for n in names)
        body = (
            f'"images":[{",".join(image_text[i] for i in ids)}],'
            f'"annotations":[{",".join(a for i in ids for a in ann_text.get(i, []))}]}}'
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + body, encoding="utf-8")

    dump(ann_dir / "instances_all.json", keys)
    parts = fixed_split(keys, split, seed, strata, groups)
    for name in SPLIT_NAMES:
        dump(ann_dir / f"instances_{name}.json", parts[name])
    report.splits = {name: len(parts[name]) for name in SPLIT_NAMES}
    fold_tests = []
    if folds:
        for k, fold in enumerate(kfold_splits(keys, folds, seed, strata, groups)):
            for name in SPLIT_NAMES:
                dump(ann_dir / f"fold{k}" / f"instances_{name}.json", fold[name])
            fold_tests.append(fold["test"])
    if groups is not None:
        group_of_key = dict(zip(keys, groups, strict=True))

        def count(names: Sequence[str]) -> int:
            return len({group_of_key[n] for n in names})

        report.grouping["groups"] = len(set(groups))
        report.grouping["groups_per_split"] = {n: count(parts[n]) for n in SPLIT_NAMES}
        if folds:
            report.grouping["test_groups_per_fold"] = [count(test) for test in fold_tests]


def read_groups_csv(path: str | Path) -> list[tuple[int, str, str]]:
    """``(line, file, group)`` rows of a ``file,group`` CSV (other columns ignored, header names
    in any case); ``ValueError`` for a missing file or column and for a row without a group."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: groups file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's BOM
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            missing = [c for c in GROUPS_COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{path}: no column {' or '.join(map(repr, missing))}; "
                    f"the groups CSV needs a header with {','.join(GROUPS_COLUMNS)}"
                )
            file_col, group_col = (header.index(c) for c in GROUPS_COLUMNS)
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                cells = [*row, "", ""]
                name, group = cells[file_col].strip(), cells[group_col].strip()
                if not name or not group:
                    raise ValueError(f"{path} line {reader.line_num}: needs a file and a group")
                rows.append((reader.line_num, name, group))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot read the groups CSV: {err}") from err
    return rows


def _file_groups(
    src: Path,
    files: Sequence[Path],
    results: Sequence[_FileResult],
    group_by: str,
    group_rows: Sequence[tuple[int, str, str]] | None,
    groups_path: str | Path | None,
    report: ConversionReport,
) -> dict[str, str]:
    """The group of every file that converted (by relative path); ``ValueError`` naming the
    first files without one."""
    converted = [r for r in results if not r.not_labelme and not r.error]
    if group_rows is None:
        group_of, missing = _meta_groups(src, converted, GROUP_FIELDS[group_by])
        source = "meta.json"
        how = (
            f"each needs a {GROUP_FIELDS[group_by]!r} in a <stem>{META_SUFFIX} beside it or its "
            f"image, as `bsi-d2 preprocess` writes it from DICOMs with a PatientID; or give "
            f"--groups MAP.csv with columns {','.join(GROUPS_COLUMNS)}"
        )
    else:
        rels = [path.relative_to(src).as_posix() for path in files]
        assigned, unmatched = _csv_groups(rels, group_rows, groups_path)
        group_of = {r.rel: assigned[r.rel] for r in converted if r.rel in assigned}
        missing = [f"{r.rel} (no row)" for r in converted if r.rel not in assigned]
        source = "csv"
        how = f"add a row ({','.join(GROUPS_COLUMNS)}) to {groups_path} for each"
        if unmatched:
            logger.warning(
                "%s: %d row(s) name no Labelme file in %s: %s",
                groups_path,
                len(unmatched),
                src,
                ", ".join(unmatched[:LISTED]) + (" ..." if len(unmatched) > LISTED else ""),
            )
            report.grouping["unmatched_rows"] = unmatched
    if missing:
        more = f" and {len(missing) - LISTED} more" if len(missing) > LISTED else ""
        raise ValueError(
            f"--group-by {group_by}: {len(missing)} of {len(converted)} Labelme file(s) have no "
            f"group: {', '.join(missing[:LISTED])}{more}; {how}. Nothing written"
        )
    report.grouping = {"by": group_by, "source": source, **report.grouping}
    return group_of


def _meta_groups(
    src: Path, converted: Sequence[_FileResult], key: str
) -> tuple[dict[str, str], list[str]]:
    """Each file's ``key`` from its companion metadata, and the files without it (with why)."""
    group_of, missing = {}, []
    for result in converted:
        json_path = src / result.rel
        source = result.image.source if result.image is not None else None
        meta_path = meta_companion(json_path, source)
        if meta_path is None:
            missing.append(f"{result.rel} (no {json_path.stem}{META_SUFFIX})")
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            missing.append(f"{result.rel} (unreadable {meta_path.name}: {err})")
            continue
        value = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(value, str) or not value.strip():
            missing.append(f"{result.rel} (no {key} in {meta_path.name})")
            continue
        group_of[result.rel] = value.strip()
    return group_of, missing


def _csv_groups(
    rels: Sequence[str], rows: Sequence[tuple[int, str, str]], path: str | Path | None
) -> tuple[dict[str, str], list[str]]:
    """The group of each file a row names (by relative path, that without ``.json``, the file
    name or the stem), and the rows' names that match no file."""
    named: dict[str, set[str]] = {}
    for rel in rels:
        stem = Path(rel).with_suffix("").as_posix()
        for name in {rel, stem, Path(rel).name, Path(stem).name}:
            named.setdefault(name, set()).add(rel)
    assigned: dict[str, tuple[str, int]] = {}
    unmatched = []
    for line, name, group in rows:
        matches = named.get(name.replace("\\", "/").removeprefix("./"), set())
        if not matches:
            unmatched.append(name)
            continue
        if len(matches) > 1:
            listed = ", ".join(sorted(matches)[:LISTED])
            raise ValueError(
                f"{path} line {line}: {name!r} matches {len(matches)} files ({listed}); "
                "give the path relative to the source folder"
            )
        (rel,) = matches
        first_group, first_line = assigned.setdefault(rel, (group, line))
        if first_group != group:  # the groups may be identifiers: named by line only
            raise ValueError(
                f"{path} lines {first_line} and {line}: two different groups for {rel}"
            )
    return {rel: group for rel, (group, _) in assigned.items()}, unmatched
