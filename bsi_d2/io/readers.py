"""One reader interface for whole-body scans, picked by file type.

:func:`read_scan_file` reads one file (DICOM, PNG/TIFF, Labelme JSON) into :class:`ScanImage`
objects with the reader registered for its type (:data:`bsi_d2.io.base.READERS`: the DICOM reader
from :mod:`bsi_d2.io.dicom`, the image and Labelme readers from here) and raises
:class:`ReaderError` naming the file and the problem. :func:`iter_scans` walks
files and folders, never raises for a bad file (it yields :class:`SkippedInput` instead), and pairs
single-view files of one study (anterior + posterior) within a folder.

Every reader takes :class:`~bsi_d2.io.limits.ReadLimits` and checks them before decoding a pixel:
the file's size by ``stat``, then the declared matrix from the header (a lazy Pillow open, the
DICOM header); counts that cannot be counts (NaN, infinite, negative) are refused after decoding.

A PNG/TIFF image or Labelme JSON with a ``<stem>.meta.json`` beside it (``bsi-d2 preprocess``
writes one per scan) takes its study link from it (:func:`read_study_link`), so a scan read from
preprocess's PNG carries the ``study_key`` and ``patient_key`` of the DICOM it came from.

Nothing in a :class:`ScanImage`'s ``metadata`` identifies the patient unless ``keep_identity``;
a study date is there only as ``keep_dates`` keeps it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bsi_d2.io.base import (
    COUNTS_SUFFIX,
    IMAGE_SUFFIXES,
    LABELME_SUFFIXES,
    MAX_VIEW_ASPECT,
    MAX_VIEW_ROWS,
    META_SUFFIX,
    MIN_VIEW_ASPECT,
    MIN_VIEW_ROWS,
    READERS,
    SNIFF_BYTES,
    NotAScanError,
    ReaderBase,
    ReaderError,
    ScanImage,
    SkippedInput,
    UnsupportedFileError,
    check_file_size,
    count_stats,
    counts_path,
    counts_problem,
    is_whole_body_shape,
    meta_companion,
    meta_path,
    negative_problem,
    nonfinite_problem,
    reader_suffixes,
    register_reader,
    view_from_text,
    view_shape_reason,
)
from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.io.pseudonym import (
    LINK_FIELDS,
    digest_suffix,
    file_digest,
    kept_link,
    link_problem,
    study_key,
)
from bsi_d2.taxonomy import VIEWS

__all__ = [
    # defined here
    "MERGED_SHAPE",
    "ImageReader",
    "LabelmeReader",
    "attach_counts",
    "counts_companion",
    "image_array",
    "image_scan",
    "iter_scans",
    "pair_single_views",
    "pillow_limits",
    "read_scan_file",
    "read_study_link",
    "reader_for",
    "source_digests",
    # from bsi_d2.io.base (their home), importable from here as before
    "COUNTS_SUFFIX",
    "MAX_VIEW_ASPECT",
    "MAX_VIEW_ROWS",
    "MIN_VIEW_ASPECT",
    "MIN_VIEW_ROWS",
    "READERS",
    "VIEWS",
    "NotAScanError",
    "ReaderError",
    "ScanImage",
    "SkippedInput",
    "UnsupportedFileError",
    "check_file_size",
    "count_stats",
    "counts_problem",
    "is_whole_body_shape",
    "negative_problem",
    "nonfinite_problem",
    "view_from_text",
    "view_shape_reason",
]

logger = logging.getLogger(__name__)

MERGED_SHAPE = (950, 512)


@contextmanager
def pillow_limits(where: object, limits: ReadLimits) -> Iterator[None]:
    """Pillow's own bomb guard set to the frame limit; its error and warning become ReaderError."""
    from PIL import Image

    # Pillow has no per-call limit: set for this open and restored (not thread-safe, like
    # catch_warnings; a concurrent open elsewhere at worst meets the stricter limit)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_frame_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else f"too many pixels ({error})"
        raise ReaderError(
            f"{where}: image of {size}, over the limit of {limits.max_frame_pixels:,} pixels "
            "(ReadLimits.max_frame_pixels); not decoded"
        ) from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous


# --------------------------------------------------------------------------------------------
# readers (the DICOM reader is bsi_d2.io.dicom.DicomReader)


@register_reader
class ImageReader(ReaderBase):
    """PNG/TIFF, 8- or 16-bit: an already merged 950 x 512 scan or one whole-body view.

    A sibling ``<stem>.counts.png`` (as ``bsi-d2 preprocess`` writes) supplies the raw counts,
    a sibling ``<stem>.meta.json`` the study link (:func:`read_study_link`).
    """

    name: ClassVar[str] = "image"
    suffixes: ClassVar[tuple[str, ...]] = IMAGE_SUFFIXES

    def read(self, path: str | Path) -> list[ScanImage]:
        path = Path(path)
        check_file_size(path, self.limits)
        scan = image_scan(path.read_bytes(), path, salt=self.salt, limits=self.limits)
        attach_counts(scan, counts_companion(path), self.limits)
        attach_study_link(scan, meta_path(path), self.date_mode, self.limits)
        return [scan]


@register_reader
class LabelmeReader(ReaderBase):
    """A Labelme JSON: the scan is the image it annotates, found by :mod:`bsi_d2.io.labelme`.

    A sibling ``<stem>.counts.png`` of that image supplies the raw counts; a ``<stem>.meta.json``
    beside the JSON (else beside the image) the study link (:func:`read_study_link`).
    """

    name: ClassVar[str] = "labelme"
    suffixes: ClassVar[tuple[str, ...]] = LABELME_SUFFIXES

    def read(self, path: str | Path) -> list[ScanImage]:
        from bsi_d2.io.labelme import (
            LabelmeError,
            NotLabelmeError,
            image_candidates,
            labelme_image,
            load_labelme,
        )

        path = Path(path)
        check_file_size(path, self.limits, json=True)  # load_labelme reads the whole file
        try:
            labelme = load_labelme(path)
            source = next((p for p in image_candidates(labelme) if p.is_file()), None)
            if source is not None:
                check_file_size(source, self.limits)
            where = f"{path} (image {source.name if source else 'imageData'})"
            with pillow_limits(where, self.limits):  # labelme_image opens the image lazily
                image = labelme_image(labelme)
        except NotLabelmeError as error:
            raise UnsupportedFileError(str(error)) from error
        except LabelmeError as error:
            raise ReaderError(str(error)) from error
        where = image.source or path
        scan = image_scan(image.read_bytes(), Path(where), salt=self.salt, limits=self.limits)
        scan.sources = [str(path)] + ([str(image.source)] if image.source else [])
        # the bytes hashed were the image file's, or the JSON's embedded imageData (no file's)
        scan.digests = {s: d for s, d in scan.digests.items() if s in scan.sources[1:]}
        attach_counts(scan, image.counts_source, self.limits)
        scan.metadata["format"] = f"labelme+{scan.metadata['format']}"
        companion = meta_companion(path, image.source)
        if companion is not None:
            attach_study_link(scan, companion, self.date_mode, self.limits)
        return [scan]


def counts_companion(image_path: Path) -> Path | None:
    """The ``<stem>.counts.png`` holding the raw counts of a merged display image, if present."""
    candidate = counts_path(image_path)
    return candidate if candidate.is_file() else None


def attach_counts(
    scan: ScanImage, counts_path: Path | None, limits: ReadLimits = DEFAULT_LIMITS
) -> None:
    """Use a merged scan's raw-count companion image as its counts (BSTBI needs them)."""
    if counts_path is None or scan.merged is None:
        return
    check_file_size(counts_path, limits)
    data = counts_path.read_bytes()
    counts, bits = image_array(data, counts_path, limits)
    if counts.shape == scan.merged.shape:
        scan.merged = counts.astype(np.float32)
        scan.metadata.update(
            bit_depth=bits, counts=count_stats(scan.merged), counts_source="counts"
        )
        scan.sources.append(str(counts_path))
        scan.digests[str(counts_path)] = hashlib.sha256(data).hexdigest()


def read_study_link(
    path: Path, mode: str | None, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[dict[str, Any] | None, str | None]:
    """The study link (:data:`~bsi_d2.io.pseudonym.LINK_FIELDS`) a scan's ``<stem>.meta.json``
    gives, as ``mode`` (:func:`~bsi_d2.io.pseudonym.date_mode`) keeps its date
    (:func:`~bsi_d2.io.pseudonym.kept_link`); nothing else of the file is read. ``(None, None)``
    without the file; ``(None, problem)`` for one that is too large, not JSON or whose fields
    are malformed (keys not ``s``/``pt`` + 16 hex digits, a date not YYYY-MM-DD or YYYY-MM, a
    kind not month, shifted or exact): such a file is ignored whole."""
    if not path.is_file():
        return None, None
    size = path.stat().st_size
    reason = limits.file_size_reason(size, json=True)
    if reason is not None:
        return None, reason
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"not readable JSON ({type(error).__name__})"
    if not isinstance(document, dict):
        return None, "not a JSON object"
    link = {k: document[k] for k in LINK_FIELDS if k in document}
    problem = link_problem(link)
    if problem is not None:
        return None, problem
    return kept_link(link, mode), None


def attach_study_link(
    scan: ScanImage, path: Path, mode: str | None, limits: ReadLimits = DEFAULT_LIMITS
) -> None:
    """Give ``scan`` the study link of its companion ``path`` (:func:`read_study_link`): its
    ``study_key`` becomes the scan's key. A malformed companion is warned about, and ignored."""
    link, problem = read_study_link(path, mode, limits)
    if problem is not None:
        # the path is a log argument, relabelled in batches (it may name the patient)
        logger.warning("%s: metadata companion ignored: %s", path, problem)
        scan.metadata["warnings"].append(f"metadata companion ({META_SUFFIX}) ignored: {problem}")
    if link is None:
        return
    link["study_key"] = link["study_key"] or scan.metadata["study_key"]
    scan.metadata.update(link)
    scan.key = link["study_key"]


def reader_for(path: str | Path) -> str | None:
    """Name of the reader for ``path``: by suffix, else by its first bytes (the DICOM preamble);
    None if no registered reader (:data:`~bsi_d2.io.base.READERS`) takes it."""
    path = Path(path)
    name = reader_suffixes().get(path.suffix.lower())
    if name is not None:
        return name
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return None
    return next((reader.name for reader in READERS.values() if reader.recognises(head)), None)


def read_scan_file(
    path: str | Path,
    salt: str | None = None,
    keep_identity: bool = False,
    limits: ReadLimits | None = None,
    keep_dates: str | None = None,
) -> list[ScanImage]:
    """Read one file into scans (single views stay unpaired); raises :class:`ReaderError`.

    ``limits`` (default :data:`~bsi_d2.io.limits.DEFAULT_LIMITS`) are checked before decoding;
    ``keep_dates`` (month, shift; :func:`~bsi_d2.io.pseudonym.kept_study_date`) says whether
    and how the metadata keeps the study date.
    """
    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{path}: no such file")
    name = reader_for(path)
    if name is None:
        raise UnsupportedFileError(
            f"{path}: not a DICOM, PNG, TIFF or Labelme JSON file (suffix {path.suffix!r}, "
            "no DICOM preamble)"
        )
    reader = READERS[name](
        salt=salt, keep_identity=keep_identity, limits=limits, keep_dates=keep_dates
    )
    try:
        return reader.read(path)
    except ReaderError:
        raise
    except Exception as error:  # any library failure becomes a message naming the file
        raise ReaderError(f"{path}: {type(error).__name__}: {error}") from error


def iter_scans(
    paths: Sequence[str | Path],
    recursive: bool = True,
    salt: str | None = None,
    keep_identity: bool = False,
    exclude: Sequence[str | Path] = (),
    limits: ReadLimits | None = None,
    keep_dates: str | None = None,
) -> Iterator[ScanImage | SkippedInput]:
    """Scans from files and folders, folder by folder; bad files yield :class:`SkippedInput`.

    Files beyond ``limits`` (default :data:`~bsi_d2.io.limits.DEFAULT_LIMITS`) are skipped as
    errors without being decoded.

    Single-view files of one study in one folder are paired into anterior + posterior (by study,
    then series); a file with the SOPInstanceUID of one already read is skipped as a duplicate.
    Keys that repeat (two scans of one study) get ``-2``, ``-3``... appended.
    Files under an ``exclude`` folder (e.g. the output folder inside the input) are not read,
    nor the companions of an image or Labelme file among the inputs (``<stem>.counts.png``,
    ``<stem>.meta.json``): they belong to its scan.
    """
    files, skipped = _expand(paths, recursive)
    excluded = [Path(e).resolve() for e in exclude]
    files = [f for f in files if not any(f.resolve().is_relative_to(e) for e in excluded)]
    yield from skipped
    readers = {f.resolve(): reader_for(f) for f in files}
    images = {f for f, name in readers.items() if name == ImageReader.name}
    # a <stem>.counts.png beside its display image, and a <stem>.meta.json beside an image or
    # a Labelme file, belong to that scan, not a scan of their own
    scan_files = [
        f for f, name in readers.items() if name in (ImageReader.name, LabelmeReader.name)
    ]
    companions = {counts_path(image) for image in images} | {meta_path(f) for f in scan_files}
    files = [f for f in files if f.resolve() not in companions]
    seen: dict[str, int] = defaultdict(int)
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for f in files:
        by_folder[f.parent].append(f)
    for folder in by_folder:
        singles: list[ScanImage] = []
        instances: dict[str, Path] = {}
        for path in by_folder[folder]:
            if path.suffix.lower() == ".json":
                duplicate = _labelme_duplicate(path, images, limits or DEFAULT_LIMITS)
                if duplicate is not None:
                    yield duplicate
                    continue
            try:
                scans = read_scan_file(
                    path, salt, keep_identity, limits=limits, keep_dates=keep_dates
                )
            except NotAScanError as error:
                yield SkippedInput(str(path), str(error), "not_a_scan")
                continue
            except UnsupportedFileError as error:
                yield SkippedInput(str(path), str(error), "unsupported")
                continue
            except ReaderError as error:
                yield SkippedInput(str(path), str(error), "error")
                continue
            for scan in scans:
                if scan.merged is None and len(scan.views) == 1 and scan.pairing is not None:
                    # a copy of an image already read is one image, never the other view
                    instance = scan.pairing.get("instance")
                    if instance and instance in instances:
                        reason = f"{path}: same SOPInstanceUID as {instances[instance]}"
                        yield SkippedInput(str(path), reason, "duplicate")
                        continue
                    if instance:
                        instances[instance] = path
                    singles.append(scan)
                else:
                    yield _unique_key(scan, seen)
        for scan in pair_single_views(singles):
            yield _unique_key(scan, seen)


# --------------------------------------------------------------------------------------------
# pairing single views


def pair_single_views(scans: Sequence[ScanImage]) -> list[ScanImage]:
    """Pair single-view scans: within a series first, then leftovers within the study."""
    studies: dict[Any, list[ScanImage]] = defaultdict(list)
    for scan in scans:
        studies[scan.pairing["group"]].append(scan)
    result: list[ScanImage] = []
    for members in studies.values():
        series: dict[Any, list[ScanImage]] = defaultdict(list)
        for scan in members:
            series[scan.pairing.get("subgroup")].append(scan)
        leftovers: list[ScanImage] = []
        for group in series.values():
            pair = _try_pair(group) if len(group) == 2 else None
            if pair is None:
                leftovers.extend(group)
            else:
                result.append(pair)
        pair = _try_pair(leftovers) if len(leftovers) == 2 else None
        result.extend([pair] if pair is not None else leftovers)
    return result


def _try_pair(group: Sequence[ScanImage]) -> ScanImage | None:
    first, second = sorted(group, key=lambda s: s.pairing.get("order", 0))
    (view_a, counts_a), (view_b, counts_b) = (
        next(iter(first.views.items())),
        next(iter(second.views.items())),
    )
    rule_a = first.metadata["views"][view_a]["view_rule"]
    rule_b = second.metadata["views"][view_b]["view_rule"]
    warnings: list[str] = []
    if view_a == view_b:
        if rule_a == rule_b == "frame_order":
            view_a, view_b = VIEWS
            warnings.append(
                "views of the paired files unknown: the first (by instance/file order) taken "
                "as anterior, the second as posterior; check them"
            )
        elif "frame_order" in (rule_a, rule_b):
            guessed_second = rule_b == "frame_order"
            other = VIEWS[1 - VIEWS.index(view_a if guessed_second else view_b)]
            view_a, view_b = (view_a, other) if guessed_second else (other, view_b)
            warnings.append(f"one paired file has no view information: taken as the {other}")
        else:
            return None
    if counts_a.shape[0] != counts_b.shape[0]:
        return None
    by_view = {view_a: (first, counts_a, 0), view_b: (second, counts_b, 1)}
    anterior = by_view["anterior"][0]
    metadata = {k: v for k, v in anterior.metadata.items() if k not in ("views", "warnings")}
    metadata["views"] = {}
    for view, (scan, _, index) in by_view.items():
        entry = dict(next(iter(scan.metadata["views"].values())))
        entry["source_index"] = index
        if scan.metadata["views"].get(view) is None:
            entry["view_rule"] = "pairing"
        metadata["views"][view] = entry
    metadata["warnings"] = list(
        dict.fromkeys([*first.metadata["warnings"], *second.metadata["warnings"], *warnings])
    )
    metadata["paired_files"] = 2
    digests = [s.pairing.get("digest") for s in (first, second)]
    key = (
        study_key(fallback="+".join(digests), salt=first.pairing.get("salt"))
        if all(digests)
        else first.key
    )
    return ScanImage(
        key=key,
        sources=[*first.sources, *second.sources],
        views={view: by_view[view][1] for view in VIEWS},
        merged=None,
        metadata=metadata,
        digests={**first.digests, **second.digests},
    )


def source_digests(scan: ScanImage) -> list[str]:
    """SHA-256 hex digest of each of ``scan``'s source files, in order: as its reader hashed the
    bytes it read (:attr:`ScanImage.digests`), else by reading the file; OSError if unreadable."""
    return [scan.digests.get(str(s)) or file_digest(s) for s in scan.sources]


def _unique_key(scan: ScanImage, seen: dict[str, int]) -> ScanImage:
    """A second scan of a study gets the study key plus a suffix from its files' content, so
    every run names it alike whatever else it reads (a counter would depend on the order)."""
    base = scan.key
    seen[base] += 1
    if seen[base] > 1:
        scan.key = f"{base}-{digest_suffix(source_digests(scan))}"
        scan.metadata["study_key"] = base
    scan.pairing = None
    return scan


# --------------------------------------------------------------------------------------------
# files and images


def _expand(paths: Iterable[str | Path], recursive: bool) -> tuple[list[Path], list[SkippedInput]]:
    files: list[Path] = []
    skipped: list[SkippedInput] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            files.extend(sorted(p for p in found if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            skipped.append(SkippedInput(str(path), f"{path}: no such file or folder", "error"))
    unique = list(dict.fromkeys(files))
    return unique, skipped


def image_array(
    data: bytes,
    path: Path,
    limits: ReadLimits = DEFAULT_LIMITS,
    shape_reason: Callable[[int, int], str | None] | None = None,
) -> tuple[np.ndarray, int]:
    """Grey-level array and bit depth of a PNG/TIFF given as bytes; colour is refused.

    The declared size is checked against ``limits``, and against ``shape_reason`` (a reason
    becomes :class:`NotAScanError`), before decoding; NaN, infinite or negative values after.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with pillow_limits(path, limits), Image.open(io.BytesIO(data)) as image:
            reason = limits.pixel_reason(image.height, image.width)
            if reason is not None:
                raise ReaderError(f"{path}: {reason}")
            reason = shape_reason(image.height, image.width) if shape_reason else None
            if reason is not None:
                raise NotAScanError(f"{path}: {reason}")
            image.load()
            mode = image.mode
            frames = getattr(image, "n_frames", 1)
            if mode in ("RGB", "RGBA", "P", "LA", "PA"):
                rgb = np.asarray(image.convert("RGB"))
                if not (
                    np.array_equal(rgb[..., 0], rgb[..., 1])
                    and np.array_equal(rgb[..., 1], rgb[..., 2])
                ):
                    raise NotAScanError(
                        f"{path}: colour image ({mode}): a screen capture, not count data"
                    )
                array = rgb[..., 0]
            else:
                array = np.asarray(image)
    except UnidentifiedImageError as error:
        raise ReaderError(f"{path}: not a readable PNG/TIFF image ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ReaderError(f"{path}: corrupt or truncated image ({error})") from error
    if array.ndim != 2:
        raise NotAScanError(f"{path}: image of shape {array.shape} is not a grey-level scan")
    problem = counts_problem(array)
    if problem is not None:
        raise ReaderError(f"{path}: {mode}-mode image holds {problem}: not counts")
    if frames > 1:  # the pages may be the two views or a series: guessing would mislabel them
        raise NotAScanError(
            f"{path}: {frames} pages in one image; only single-page images are read (save each "
            "view as its own file)"
        )
    bits = 8 if array.dtype == np.uint8 else 16 if array.dtype.itemsize <= 2 else 32
    return array, bits


def image_scan(
    data: bytes, path: Path, salt: str | None = None, limits: ReadLimits = DEFAULT_LIMITS
) -> ScanImage:
    """A :class:`ScanImage` from PNG/TIFF bytes: merged if 950 x 512, else one whole-body view."""
    array, bits = image_array(data, path, limits, _scan_shape_reason)
    digest = hashlib.sha256(data).hexdigest()
    metadata: dict[str, Any] = {
        "format": "tiff" if path.suffix.lower() in (".tif", ".tiff") else "png",
        "bit_depth": bits,
        "matrix": list(array.shape),
        "pixel_spacing_mm": None,
        "warnings": [],
        # 8-bit values are display values (a merged PNG without its counts companion), not the
        # raw counts BSTBI needs; outputs say so
        "counts_source": "display" if bits == 8 else "counts",
    }
    key = study_key(fallback=digest, salt=salt)
    metadata.update(dict.fromkeys(LINK_FIELDS), study_key=key)  # a companion may know more
    counts = array.astype(np.float32)
    if array.shape == MERGED_SHAPE:
        metadata["layout"] = "merged"
        metadata["counts"] = count_stats(counts)
        return ScanImage(key, [str(path)], {}, counts, metadata, digests={str(path): digest})
    view = view_from_text(path.stem)
    rule = "file_name"
    if view is None:
        view, rule = "anterior", "frame_order"
        metadata["warnings"].append("no view in the file name: taken as anterior; check it")
    metadata["layout"] = "views"
    metadata["views"] = {
        view: {"view_rule": rule, "source_index": 0, "counts": count_stats(counts)}
    }
    stem = re.sub(r"(?i)(?<![a-z])(ant(erior)?|post(erior)?)(?![a-z])", "", path.stem)
    pairing = {
        "group": ("image", str(path.parent), stem),
        "subgroup": None,
        "order": path.name,
        "digest": digest,
        "salt": salt,
    }
    return ScanImage(
        key, [str(path)], {view: counts}, None, metadata, pairing, digests={str(path): digest}
    )


def _scan_shape_reason(rows: int, cols: int) -> str | None:
    if (rows, cols) == MERGED_SHAPE:
        return None
    reason = view_shape_reason(rows, cols)
    if reason is None:
        return None
    return (
        f"{rows} x {cols} image is neither a whole-body view nor a 950 x 512 merged scan: {reason}"
    )


def _labelme_duplicate(path: Path, images: set[Path], limits: ReadLimits) -> SkippedInput | None:
    """A Labelme JSON whose image is itself among the inputs adds nothing: skip it."""
    from bsi_d2.io.labelme import LabelmeError, image_candidates, load_labelme

    if limits.file_size_reason(path.stat().st_size, json=True) is not None:
        return None  # not loaded here: the reader refuses it with the reason
    try:
        candidates = image_candidates(load_labelme(path))
    except LabelmeError:
        return None
    image = next((c for c in candidates if c.is_file()), None)
    if image is not None and image.resolve() in images:
        reason = f"{path}: Labelme file whose image {image.name} is read directly"
        return SkippedInput(str(path), reason, "duplicate")
    return None
