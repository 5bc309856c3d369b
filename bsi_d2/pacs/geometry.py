"""From the merged 950 x 512 image back to the source's frames, and which frame is which view.

Preprocessing cuts and centres each view without scaling (:class:`~bsi_d2.preprocess.merge.
ViewPlacement`: a translation per view, the posterior slot included), so a mask in the merged
image maps back to its source frame pixel for pixel; the merged pixels that came from no source
pixel (the canvas around a narrow view, rows cut past 950) have no place in the source and are
counted, not written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from bsi_d2.preprocess.merge import VIEW_ORDER, ViewPlacement


@dataclass
class SourceView:
    """One view of a scan as its source DICOM holds it."""

    view: str  # anterior, posterior
    header: Dataset  # the source file's header (no pixel data)
    frame: int  # 1-based frame number in that file
    placement: ViewPlacement  # source frame pixels -> merged image pixels

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.header.Rows), int(self.header.Columns)


def overlap(placement: ViewPlacement, merged_shape: tuple[int, int], source_shape=None):
    """The slices (merged, source) of the pixels a view's source frame and the merged image
    share."""
    rows, cols = source_shape or placement.source_shape
    height, width = merged_shape
    r0, c0 = max(0, placement.row_offset), max(0, placement.col_offset)
    r1 = min(height, placement.row_offset + rows)
    c1 = min(width, placement.col_offset + cols)
    if r1 <= r0 or c1 <= c0:
        return None
    merged = (slice(r0, r1), slice(c0, c1))
    source = (
        slice(r0 - placement.row_offset, r1 - placement.row_offset),
        slice(c0 - placement.col_offset, c1 - placement.col_offset),
    )
    return merged, source


def to_source(merged: np.ndarray, placement: ViewPlacement, source_shape=None) -> np.ndarray:
    """A merged-image array (H, W, ...) -> the view's source frame (rows, cols, ...), zero
    where the source pixel has no merged pixel."""
    shape = tuple(source_shape or placement.source_shape)
    out = np.zeros(shape + merged.shape[2:], merged.dtype)
    shared = overlap(placement, merged.shape[:2], shape)
    if shared is not None:
        out[shared[1]] = merged[shared[0]]
    return out


def to_merged(
    source: np.ndarray, placement: ViewPlacement, merged_shape: tuple[int, int]
) -> np.ndarray:
    """The inverse of :func:`to_source`: a source frame array placed in a zero merged image."""
    out = np.zeros(tuple(merged_shape) + source.shape[2:], source.dtype)
    shared = overlap(placement, merged_shape, source.shape[:2])
    if shared is not None:
        out[shared[0]] = source[shared[1]]
    return out


def view_columns(placement: ViewPlacement, width: int) -> slice:
    """The merged image's columns of a view's slot (anterior left half, posterior right; a
    view wider than its slot has a column offset past the slot's edge)."""
    half = width // 2
    return slice(half, width) if placement.view == VIEW_ORDER[1] else slice(0, half)


def outside_source(mask: np.ndarray, placement: ViewPlacement) -> int:
    """Pixels of ``mask`` (merged image) in this view's slot that no source pixel holds."""
    slot = np.zeros(mask.shape, bool)
    slot[:, view_columns(placement, mask.shape[1])] = True
    shared = overlap(placement, mask.shape)
    if shared is not None:
        slot[shared[0]] = False
    return int(np.count_nonzero(mask & slot))


def source_views(
    sources: Sequence[str | Path],
    views_metadata: Mapping[str, Mapping[str, Any]],
    placements: Sequence[ViewPlacement],
    read_header=None,
) -> list[SourceView]:
    """The scan's :class:`SourceView` list from its reader's metadata (``metadata["views"]``:
    frame index and source file index per view) and preprocessing's placements. Headers are
    read without pixel data, one read per file."""
    import pydicom

    read_header = read_header or (lambda p: pydicom.dcmread(p, stop_before_pixels=True))
    headers: dict[int, Dataset] = {}
    out = []
    for placement in placements:
        entry = views_metadata.get(placement.view) or {}
        index = int(entry.get("source_index", 0) or 0)
        if index not in headers:
            headers[index] = read_header(str(sources[index]))
        out.append(SourceView(placement.view, headers[index], int(entry.get("frame", 0)) + 1,
                              placement))  # fmt: skip
    return out
