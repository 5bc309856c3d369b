"""One reader interface for whole-body scans, picked by file type.

:func:`read_scan_file` reads one file (DICOM, PNG/TIFF, Labelme JSON) into :class:`ScanImage`
objects and raises :class:`ReaderError` naming the file and the problem. :func:`iter_scans` walks
files and folders, never raises for a bad file (it yields :class:`SkippedInput` instead), and pairs
single-view files of one study (anterior + posterior) within a folder.

Every reader takes :class:`~bsi_d2.io.limits.ReadLimits` and checks them before decoding a pixel:
the file's size by ``stat``, then the declared matrix from the header (a lazy Pillow open, the
DICOM header); counts that cannot be counts (NaN, infinite, negative) are refused after decoding.

Nothing in a :class:`ScanImage`'s ``metadata`` identifies the patient unless ``keep_identity``.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bsi_d2.io.limits import DEFAULT_LIMITS, ReadLimits
from bsi_d2.io.pseudonym import study_key

logger = logging.getLogger(__name__)

MERGED_SHAPE = (950, 512)
VIEWS = ("anterior", "posterior")
MIN_VIEW_ASPECT = 1.8  # rows / columns of a whole-body view: 1024x256 is 4, 1024x512 is 2
MIN_VIEW_ROWS = 256
MAX_VIEW_ROWS = 4096  # 4x the 1024 rows of a whole-body view; taller is a strip or a stitched image
MAX_VIEW_ASPECT = 10  # rows / columns: 1024x256 is 4, 2048x256 is 8; 60000x1400 (43) is no view


class ReaderError(Exception):
    """A file that cannot be read as a scan; the message names the file and the problem."""


class NotAScanError(ReaderError):
    """A readable file that is not a whole-body emission scan (spot view, SPECT, CT, ...)."""


class UnsupportedFileError(ReaderError):
    """A file of a type no reader handles."""


@dataclass
class ScanImage:
    """One study's whole-body scan: raw count views, or an already merged 950 x 512 image."""

    key: str  # stable pseudonymous study key (no identity)
    sources: list[str]  # files it came from
    views: dict[str, np.ndarray] = field(default_factory=dict)  # view -> raw counts (H, W)
    merged: np.ndarray | None = None  # set instead of views for already-merged 950x512 images
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, identity-free
    # in-memory hint for pairing single views of one study; never written
    pairing: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class SkippedInput:
    path: str
    reason: str
    kind: str = "error"  # "error" (broken/unreadable), "not_a_scan", "unsupported", "duplicate"


def count_stats(counts: np.ndarray) -> dict[str, float]:
    """Summary of a count image (for metadata and sanity checks)."""
    counts = np.asarray(counts, dtype=np.float64)
    return {
        "min": float(counts.min()),
        "max": float(counts.max()),
        "mean": round(float(counts.mean()), 4),
        "median": float(np.median(counts)),
        "p99": float(np.percentile(counts, 99)),
        "total": float(counts.sum()),
    }


def view_from_text(text: str | None) -> str | None:
    """'anterior' or 'posterior' when ``text`` names exactly one (ANT, RT ANT LT, POST...)."""
    if not text:
        return None
    upper = str(text).upper()
    found = {
        view
        for view, pattern in (
            ("anterior", r"(?<![A-Z])ANT(ERIOR)?(?![A-Z])"),
            ("posterior", r"(?<![A-Z])POST(ERIOR)?(?![A-Z])"),
        )
        if re.search(pattern, upper)
    }
    return found.pop() if len(found) == 1 else None


def view_shape_reason(rows: int, cols: int) -> str | None:
    """Why a rows x cols matrix cannot be a whole-body view, or None when it can."""
    if rows < MIN_VIEW_ROWS or rows < MIN_VIEW_ASPECT * cols:
        return (
            f"a spot view, SPECT or capture, not a whole-body view (needs rows >= {MIN_VIEW_ROWS} "
            f"and >= {MIN_VIEW_ASPECT} x columns)"
        )
    if rows > MAX_VIEW_ROWS or rows > MAX_VIEW_ASPECT * cols:
        return (
            f"a strip, not a whole-body view (at most {MAX_VIEW_ROWS} rows and "
            f"{MAX_VIEW_ASPECT} x columns)"
        )
    return None


def is_whole_body_shape(shape: tuple[int, ...]) -> bool:
    return view_shape_reason(*shape[:2]) is None


def nonfinite_problem(values: np.ndarray) -> str | None:
    """How many values are NaN or infinite, as a reason, or None (no array-sized temporary)."""
    if values.size == 0 or values.dtype.kind != "f":
        return None
    if np.isfinite(values.min()) and np.isfinite(values.max()):  # NaN and inf reach min or max
        return None
    return f"{int(np.count_nonzero(~np.isfinite(values))):,} NaN or infinite value(s)"


def negative_problem(values: np.ndarray) -> str | None:
    """The lowest value as a reason when it is below 0, or None."""
    if values.size == 0 or values.dtype.kind == "u":
        return None
    low = float(values.min())
    return f"negative counts (down to {low:g})" if low < 0 else None


def counts_problem(values: np.ndarray) -> str | None:
    """What makes decoded values impossible as counts (NaN, infinite, negative), or None."""
    return nonfinite_problem(values) or negative_problem(values)


def check_file_size(path: Path, limits: ReadLimits, json: bool = False) -> None:
    """ReaderError for an empty file or one over the size limit, by ``stat``, before reading."""
    size = path.stat().st_size
    if size == 0:
        raise ReaderError(f"{path}: empty file (0 bytes)")
    reason = limits.file_size_reason(size, json=json)
    if reason is not None:
        raise ReaderError(f"{path}: {reason}")


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
# readers


class _Reader:
    """What every reader is given: the pseudonym salt, identity handling and the limits."""

    def __init__(
        self,
        salt: str | None = None,
        keep_identity: bool = False,
        limits: ReadLimits | None = None,
    ) -> None:
        self.salt = salt
        self.keep_identity = keep_identity
        self.limits = limits if limits is not None else DEFAULT_LIMITS


class DicomReader(_Reader):
    """DICOM files (NM Image Storage, Secondary Capture with Modality NM, ...)."""

    name: ClassVar[str] = "dicom"
    suffixes: ClassVar[tuple[str, ...]] = (".dcm", ".dicom", ".dic", ".ima")

    def read(self, path: str | Path) -> list[ScanImage]:
        from bsi_d2.io.dicom import read_dicom

        return read_dicom(
            path, salt=self.salt, keep_identity=self.keep_identity, limits=self.limits
        )


class ImageReader(_Reader):
    """PNG/TIFF, 8- or 16-bit: an already merged 950 x 512 scan or one whole-body view."""

    name: ClassVar[str] = "image"
    suffixes: ClassVar[tuple[str, ...]] = (".png", ".tif", ".tiff")

    def read(self, path: str | Path) -> list[ScanImage]:
        path = Path(path)
        check_file_size(path, self.limits)
        scan = image_scan(path.read_bytes(), path, salt=self.salt, limits=self.limits)
        attach_counts(scan, counts_companion(path), self.limits)
        return [scan]


class LabelmeReader(_Reader):
    """A Labelme JSON: the scan is the image it annotates, found by :mod:`bsi_d2.io.labelme`.

    A sibling ``<stem>.counts.png`` (as ``bsi-d2 preprocess`` writes) supplies the raw counts.
    """

    name: ClassVar[str] = "labelme"
    suffixes: ClassVar[tuple[str, ...]] = (".json",)

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
        attach_counts(scan, image.counts_source, self.limits)
        scan.metadata["format"] = f"labelme+{scan.metadata['format']}"
        return [scan]


COUNTS_SUFFIX = ".counts"


def counts_companion(image_path: Path) -> Path | None:
    """The ``<stem>.counts.png`` holding the raw counts of a merged display image, if present."""
    candidate = image_path.with_name(image_path.stem + COUNTS_SUFFIX + image_path.suffix)
    return candidate if candidate.is_file() else None


def _is_counts_companion(path: Path, images: set[Path]) -> bool:
    stem = Path(path.stem)
    if stem.suffix != COUNTS_SUFFIX:
        return False
    return path.resolve().with_name(stem.stem + path.suffix) in images


def attach_counts(
    scan: ScanImage, counts_path: Path | None, limits: ReadLimits = DEFAULT_LIMITS
) -> None:
    """Use a merged scan's raw-count companion image as its counts (BSTBI needs them)."""
    if counts_path is None or scan.merged is None:
        return
    check_file_size(counts_path, limits)
    counts, bits = image_array(counts_path.read_bytes(), counts_path, limits)
    if counts.shape == scan.merged.shape:
        scan.merged = counts.astype(np.float32)
        scan.metadata.update(
            bit_depth=bits, counts=count_stats(scan.merged), counts_source="counts"
        )
        scan.sources.append(str(counts_path))


READERS: dict[str, type] = {r.name: r for r in (DicomReader, ImageReader, LabelmeReader)}
SUFFIX_TO_READER: dict[str, str] = {s: r.name for r in READERS.values() for s in r.suffixes}


def reader_for(path: str | Path) -> str | None:
    """Name of the reader for ``path``: by suffix, else by the DICOM preamble; None if none."""
    path = Path(path)
    name = SUFFIX_TO_READER.get(path.suffix.lower())
    if name is not None:
        return name
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            if handle.read(4) == b"DICM":
                return DicomReader.name
    except OSError:
        return None
    return None


def read_scan_file(
    path: str | Path,
    salt: str | None = None,
    keep_identity: bool = False,
    limits: ReadLimits | None = None,
) -> list[ScanImage]:
    """Read one file into scans (single views stay unpaired); raises :class:`ReaderError`.

    ``limits`` (default :data:`~bsi_d2.io.limits.DEFAULT_LIMITS`) are checked before decoding.
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
    reader = READERS[name](salt=salt, keep_identity=keep_identity, limits=limits)
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
) -> Iterator[ScanImage | SkippedInput]:
    """Scans from files and folders, folder by folder; bad files yield :class:`SkippedInput`.

    Files beyond ``limits`` (default :data:`~bsi_d2.io.limits.DEFAULT_LIMITS`) are skipped as
    errors without being decoded.

    Single-view files of one study in one folder are paired into anterior + posterior (by study,
    then series); a file with the SOPInstanceUID of one already read is skipped as a duplicate.
    Keys that repeat (two scans of one study) get ``-2``, ``-3``... appended.
    Files under an ``exclude`` folder (e.g. the output folder inside the input) are not read.
    """
    files, skipped = _expand(paths, recursive)
    excluded = [Path(e).resolve() for e in exclude]
    files = [f for f in files if not any(f.resolve().is_relative_to(e) for e in excluded)]
    yield from skipped
    images = {f.resolve() for f in files if reader_for(f) == ImageReader.name}
    # a <stem>.counts.png beside its display image belongs to that scan, not a scan of its own
    files = [f for f in files if not _is_counts_companion(f, images)]
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
                scans = read_scan_file(path, salt=salt, keep_identity=keep_identity, limits=limits)
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
    )


def _unique_key(scan: ScanImage, seen: dict[str, int]) -> ScanImage:
    """A second scan of a study gets the study key plus a suffix from its files' content, so
    every run names it alike whatever else it reads (a counter would depend on the order)."""
    from bsi_d2.io.pseudonym import content_suffix

    base = scan.key
    seen[base] += 1
    if seen[base] > 1:
        scan.key = f"{base}-{content_suffix(scan.sources)}"
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
    import hashlib

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
    metadata["study_key"] = key
    counts = array.astype(np.float32)
    if array.shape == MERGED_SHAPE:
        metadata["layout"] = "merged"
        metadata["counts"] = count_stats(counts)
        return ScanImage(key, [str(path)], {}, counts, metadata)
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
    return ScanImage(key, [str(path)], {view: counts}, None, metadata, pairing)


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
