"""The simple post-processing of the upload page, NumPy in, NumPy out, and its preview.

- **swap** anterior and posterior (a camera that labelled them the other way round);
- **mirror** a view left-right (a posterior view stored as seen from the front, or the reverse);
- **crop below the knees** (``preprocess_scan``'s ``cut_below_knee``: rows from 640 on zeroed);
- **window**: the display value shown as white. It changes how the scan is *shown* (the preview
  and the result's overlay), never what the model sees: the model was trained on the
  preprocessing's fixed brightness rule (mean 10.5 of 255 over the views), and an input made
  brighter or darker is one it has not learnt. Its result therefore does not depend on it.

The preview is the merged 950 x 512 image as :func:`~bsi_d2.preprocess.pipeline.preprocess_scan`
makes it from the adjusted views, with the window applied. A run with swap or mirror reads the
scan from the files :func:`write_adjusted` writes (``bsi-d2 preprocess``'s own outputs: display,
16-bit counts and the study link), so ``run_batch`` sees what the preview showed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.io.base import ScanImage
from bsi_d2.preprocess.merge import VIEW_ORDER, VIEW_WIDTH
from bsi_d2.preprocess.pipeline import PreparedScan, preprocess_scan, write_prepared

WINDOW_RANGE = (8, 255)  # display values shown as white; 255: the model's own image
TRUE_WORDS = ("1", "on", "true", "yes")


@dataclass(frozen=True)
class Adjustments:
    swap_views: bool = False
    mirror_anterior: bool = False
    mirror_posterior: bool = False
    cut_below_knee: bool = False
    window: int = WINDOW_RANGE[1]

    @property
    def changes_views(self) -> bool:
        """Whether the model's input differs from the upload's own views."""
        return self.swap_views or self.mirror_anterior or self.mirror_posterior

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Adjustments:
        """From form or query values: checkboxes as ``on``/``1``/``true``, the window clamped
        to :data:`WINDOW_RANGE`; anything unknown is ignored."""

        def flag(name: str) -> bool:
            return str(values.get(name, "")).strip().lower() in TRUE_WORDS

        try:
            window = int(float(values.get("window", WINDOW_RANGE[1])))
        except (TypeError, ValueError):
            window = WINDOW_RANGE[1]
        return cls(
            flag("swap_views"),
            flag("mirror_anterior"),
            flag("mirror_posterior"),
            flag("cut_below_knee"),
            min(max(window, WINDOW_RANGE[0]), WINDOW_RANGE[1]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adjust_views(scan: ScanImage, adjustments: Adjustments) -> ScanImage:
    """A copy of ``scan`` with its views swapped and/or mirrored (a merged image by its halves,
    anterior left)."""
    scan = copy.copy(scan)
    scan.metadata = copy.deepcopy(scan.metadata)
    mirror = {"anterior": adjustments.mirror_anterior, "posterior": adjustments.mirror_posterior}
    if scan.merged is not None:
        halves = {
            view: scan.merged[:, slot * VIEW_WIDTH : (slot + 1) * VIEW_WIDTH]
            for slot, view in enumerate(VIEW_ORDER)
        }
        if adjustments.swap_views:
            halves = {"anterior": halves["posterior"], "posterior": halves["anterior"]}
        scan.merged = np.concatenate(
            [halves[v][:, ::-1] if mirror[v] else halves[v] for v in VIEW_ORDER], axis=1
        ).copy()
        return scan
    views = dict(scan.views)
    described = dict(scan.metadata.get("views") or {})
    if adjustments.swap_views:
        other = {"anterior": "posterior", "posterior": "anterior"}
        views = {other[v]: counts for v, counts in views.items()}
        described = {other.get(v, v): entry for v, entry in described.items()}
    scan.views = {v: (c[:, ::-1].copy() if mirror[v] else c) for v, c in views.items()}
    scan.metadata["views"] = described
    return scan


def prepare(scan: ScanImage, adjustments: Adjustments) -> PreparedScan:
    """The merged scan the model would see after ``adjustments`` (the window aside)."""
    return preprocess_scan(adjust_views(scan, adjustments), adjustments.cut_below_knee)


def window_display(display: np.ndarray, window: int) -> np.ndarray:
    """The 8-bit display with value ``window`` shown as white (255: unchanged)."""
    window = min(max(int(window), WINDOW_RANGE[0]), WINDOW_RANGE[1])
    scaled = display.astype(np.uint32) * 255 // window
    return np.minimum(scaled, 255).astype(np.uint8)


def preview_png(scan: ScanImage, adjustments: Adjustments) -> bytes:
    """PNG of the merged 950 x 512 display after ``adjustments``, window applied."""
    from bsi_d2.io.png import png_bytes

    return png_bytes(window_display(prepare(scan, adjustments).display, adjustments.window))


def write_adjusted(scan: ScanImage, adjustments: Adjustments, folder: Path) -> Path:
    """Write the adjusted scan as ``bsi-d2 preprocess`` writes one (display, 16-bit counts, the
    study link in ``<key>.meta.json``) into ``folder``; returns the display PNG to read."""
    prepared = prepare(scan, adjustments)
    folder.mkdir(parents=True, exist_ok=True)
    files = write_prepared(prepared, folder)
    return folder / files["display"]
