"""Recorded predictions, returned instantly: the batch pipeline timed and tested without a model.

A recording maps each display image the model saw (by :func:`display_digest`) to the instances
it returned. It is one JSON-lines file, one scan a line: ``{"display": digest, ...}`` plus the
fields of :func:`bsi_d2.inference.outputs.predictions_document` (masks as COCO RLE), so it holds
no pixel of the scan and no name of a file. Masks stay RLE in memory and are decoded when a scan
is replayed, so 10,000 recorded scans cost megabytes, not gigabytes.

:class:`RecordingPredictor` wraps a real predictor and records what it returns (``--record``);
:func:`phantom_recording` builds one from phantoms' truth (each truth shape a predicted instance
with a score), so the pipeline runs anywhere, without a trained model.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.io.files import atomic_write_text
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

REPLAY_ENGINE = "replay"  # the record's model "engine" when a recording stood in for the model


def display_digest(display: np.ndarray) -> str:
    """32 hex digits over a display image's shape, type and pixels: the recording's key."""
    display = np.ascontiguousarray(display)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{display.dtype.str}{display.shape}".encode())
    digest.update(memoryview(display).cast("B"))
    return digest.hexdigest()


def instances_entry(digest: str, instances: Instances) -> dict[str, Any]:
    """One line of a recording: the instances as RLE, keyed by the display's digest."""
    from bsi_d2.structures.masks import mask_to_rle

    return {
        "display": digest,
        "height": int(instances.height),
        "width": int(instances.width),
        "boxes": np.asarray(instances.boxes, np.float32).reshape(-1, 4).tolist(),
        "scores": [float(s) for s in instances.scores],
        "category_ids": [int(c) for c in instances.category_ids],
        "masks": [mask_to_rle(m) for m in instances.masks],
    }


def entry_instances(entry: dict[str, Any]) -> Instances:
    """The instances of one recorded line (:func:`instances_entry`)."""
    from pycocotools import mask as mask_utils

    height, width = int(entry["height"]), int(entry["width"])
    if not entry["masks"]:
        return Instances.empty(height, width)
    rles = [{"size": m["size"], "counts": m["counts"].encode("ascii")} for m in entry["masks"]]
    with warnings.catch_warnings():  # pycocotools' NumPy 2 copy-keyword notice, once per call
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(rles)
    masks = np.ascontiguousarray(np.moveaxis(decoded, -1, 0), dtype=bool)  # (N, H, W)
    return Instances(
        height,
        width,
        np.asarray(entry["boxes"], np.float32).reshape(-1, 4),
        np.asarray(entry["scores"], np.float32),
        np.asarray(entry["category_ids"], np.int64),
        masks,
    )


def save_recording(path: str | Path, entries: Sequence[dict[str, Any]]) -> Path:
    """Write a recording (atomically), one :func:`instances_entry` a line."""
    return atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))


def load_recording(path: str | Path) -> dict[str, dict[str, Any]]:
    """display digest -> recorded entry, from a recording file."""
    entries = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                entry = json.loads(line)
                entries[entry["display"]] = entry
    return entries


class ReplayPredictor:
    """A predictor (list of display images -> list of Instances) answering from a recording; a
    display that was never recorded raises KeyError, which fails that scan alone."""

    def __init__(self, entries: dict[str, dict[str, Any]], taxonomy: Taxonomy) -> None:
        self.entries = entries
        self.taxonomy = taxonomy
        self.batch_size = 4

    @classmethod
    def from_file(cls, path: str | Path, taxonomy: Taxonomy) -> ReplayPredictor:
        return cls(load_recording(path), taxonomy)

    def __call__(self, images: Sequence[np.ndarray]) -> list[Instances]:
        found = []
        for image in images:
            digest = display_digest(image)
            if digest not in self.entries:
                raise KeyError(f"display {digest} is not in the recording")
            found.append(entry_instances(self.entries[digest]))
        return found


class RecordingPredictor:
    """Wraps ``predictor`` and keeps what it returns for each display, to :meth:`save`."""

    def __init__(self, predictor: Callable[[list[np.ndarray]], list[Instances]]) -> None:
        self.predictor = predictor
        self.entries: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:  # batch_size, taxonomy, engine, device...
        return getattr(self.predictor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("predictor", "entries"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.predictor, name, value)

    def __call__(self, images: list[np.ndarray]) -> list[Instances]:
        predictions = self.predictor(images)
        for image, instances in zip(images, predictions, strict=True):
            digest = display_digest(image)
            self.entries[digest] = instances_entry(digest, instances)
        return predictions

    def save(self, path: str | Path) -> Path:
        return save_recording(path, list(self.entries.values()))


def phantom_recording(
    phantom_dir: str | Path, taxonomy: Taxonomy, seed: int = 0
) -> list[dict[str, Any]]:
    """A recording from ``bsi-d2 phantom`` output: for each scan of ``dicom/`` (a two-frame
    ``<name>.dcm``, or ``<name>_ANT.dcm`` + ``<name>_POST.dcm`` paired as ``predict`` pairs
    them), the shapes of ``labelme/<name>.json`` as instances, scores drawn in [0.6, 1), keyed
    by the display image ``predict`` makes of it."""
    from bsi_d2.inference.annotations import labelme_file_instances
    from bsi_d2.io.base import ScanImage
    from bsi_d2.io.readers import iter_scans
    from bsi_d2.preprocess.pipeline import preprocess_scan

    phantom_dir = Path(phantom_dir)
    rng = np.random.default_rng(seed)
    scans = [s for s in iter_scans([str(phantom_dir / "dicom")]) if isinstance(s, ScanImage)]
    entries = []
    for scan in sorted(scans, key=lambda s: sorted(map(str, s.sources))):
        stem = Path(sorted(map(str, scan.sources))[0]).stem
        stem = stem.removesuffix("_ANT").removesuffix("_POST")
        display = preprocess_scan(scan).display
        truth = labelme_file_instances(
            phantom_dir / "labelme" / f"{stem}.json", taxonomy, display.shape
        )
        truth.scores = (0.6 + 0.4 * rng.random(len(truth))).astype(np.float32)
        entries.append(instances_entry(display_digest(display), truth))
    return entries


def distinct_copy(dicom: bytes, copy: int, source: int) -> bytes:
    """A DICOM file's bytes with its SOPInstanceUID (dataset and file meta) made unique to
    (``copy``, ``source``) in its last 8 digits: the same pixels, so one recording answers for
    every copy, but a content key of its own. Copy 0 is the file itself. The UID keeps its
    length, so every offset in the file stays valid."""
    import io

    import pydicom

    if copy == 0:
        return dicom
    uid = str(pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True).SOPInstanceUID)
    new = uid[:-8] + f"9{copy:02d}{source:05d}"
    return dicom.replace(uid.encode("ascii"), new.encode("ascii"))
