"""DICOM Segmentation of a scan's regions, decoys and lesions, in the source's geometry.

One BINARY SEG per view: NM whole-body images have no patient coordinate system (no plane
position or orientation per frame), and highdicom builds a SEG over such a source only for a
single source frame; a two-frame NM file holds both views. So each view's SEG is built against
that one frame and then says so: every segmentation frame's SourceImageSequence item carries the
view's ReferencedFrameNumber (1 anterior, 2 posterior in the usual layout; 1 for one-view
files). The segments overlap as the analysis does: a region's segment is the whole region, a
decoy's the decoy, and the lesion segment every lesion pixel; painted in that order (region,
decoy, lesion) and placed back through the view's placement they give ``labelmap.png``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from bsi_d2 import __version__
from bsi_d2.pacs import codes
from bsi_d2.pacs.geometry import SourceView, outside_source, to_source, view_columns
from bsi_d2.taxonomy import ClassDef, Taxonomy

MANUFACTURER = "bsi_d2"
SEG_SERIES_NUMBER = 9102
SEG_SERIES_DESCRIPTION = "bsi_d2 segmentation (aid, not a diagnosis)"
PAINT_ORDER = ("region", "decoy", "lesion")  # later kinds paint over earlier ones


@dataclass
class SegmentMasks:
    """The analysis's merged-image masks of one scan, by class."""

    region_map: np.ndarray  # (H, W) region class ids
    decoy_map: np.ndarray  # (H, W) decoy class ids
    lesion_mask: np.ndarray  # (H, W) bool

    def mask(self, cls: ClassDef) -> np.ndarray:
        if cls.is_lesion:
            return np.asarray(self.lesion_mask, bool)
        source = self.decoy_map if cls.is_decoy else self.region_map
        return np.asarray(source) == cls.id


def ordered_classes(taxonomy: Taxonomy) -> list[ClassDef]:
    """The taxonomy's classes in :data:`PAINT_ORDER`, then by id."""
    return sorted(taxonomy.classes, key=lambda c: (PAINT_ORDER.index(c.kind), c.id))


def build_segmentation(
    view: SourceView,
    header: Dataset,
    masks: SegmentMasks,
    taxonomy: Taxonomy,
    series_uid: str,
    instance_uid: str,
    instance_number: int,
    model_name: str,
) -> tuple[Dataset | None, dict]:
    """The view's SEG (None when no segment has a pixel in its source frame) and a summary:
    ``segments`` (number -> class name) and ``pixels_outside_source``. ``header`` is the
    view's :func:`~bsi_d2.pacs.identity.reference_header`."""
    import highdicom as hd

    slot = view_columns(view.placement, masks.region_map.shape[1])
    frames, descriptions, names, outside = [], [], {}, 0
    for cls in ordered_classes(taxonomy):
        merged = masks.mask(cls)
        in_slot = np.zeros_like(merged)
        in_slot[:, slot] = merged[:, slot]
        outside += outside_source(in_slot, view.placement)
        source = to_source(in_slot, view.placement, view.shape)
        if not source.any():
            continue
        number = len(frames) + 1
        category, kind = codes.segment_codes(cls)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=cls.name,
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name=MANUFACTURER,
                    version=__version__,
                    family=codes.SEGMENT_ALGORITHM_FAMILY,
                    source=model_name[:64] or None,
                ),  # fmt: skip
                tracking_id=f"{view.view} {cls.name}",
                tracking_uid=hd.UID(),
            )
        )
        frames.append(source)
        names[number] = cls.name
    summary = {"view": view.view, "frame": view.frame, "segments": names,
               "pixels_outside_source": outside}  # fmt: skip
    if not frames:
        return None, summary
    source_header = _one_frame(header)
    seg = hd.seg.Segmentation(
        source_images=[source_header],
        pixel_array=np.stack(frames, axis=-1)[np.newaxis].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{MANUFACTURER} {model_name}"[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"{SEG_SERIES_DESCRIPTION}, {view.view}",
        content_label=view.view.upper()[:16],
        content_description=f"{view.view} view, source frame {view.frame}",
        omit_empty_frames=False,
    )
    _reference_frame(seg, header, view.frame)
    _drop_pixel_measures(seg)
    if "PatientOrientation" not in seg:  # Type 2C where there is no frame of reference
        seg.PatientOrientation = header.get("PatientOrientation", "")
    codes.declare_scheme(seg)
    return seg, summary


def _one_frame(header: Dataset) -> Dataset:
    """``header`` as a one-frame image, as highdicom reads a multi-frame IOD's header (see the
    module docstring: the view's frame is referenced afterwards). NM is a multi-frame IOD
    without functional groups, where highdicom looks for the pixel spacing: the builder's copy
    gets a shared functional group holding it."""
    import highdicom as hd

    if "NumberOfFrames" not in header:
        return header
    single = copy.deepcopy(header)
    single.NumberOfFrames = 1
    for keyword in ("FrameIncrementPointer", "DetectorVector", "EnergyWindowVector"):
        if keyword in single:
            delattr(single, keyword)
    if "SharedFunctionalGroupsSequence" not in single and "PixelSpacing" in single:
        group = Dataset()
        group.PixelMeasuresSequence = hd.PixelMeasuresSequence(
            pixel_spacing=[float(v) for v in single.PixelSpacing], slice_thickness=None
        )
        single.SharedFunctionalGroupsSequence = [group]
    return single


def _drop_pixel_measures(seg: Dataset) -> None:
    """Remove the Pixel Measures functional group highdicom copies from a planar source: it
    holds the PixelSpacing without a SliceThickness (a planar image has none, and the macro
    needs it only for volumes), which highdicom's own reader refuses. The frames preserve the
    source's spatial locations, so its PixelSpacing applies."""
    for group in seg.get("SharedFunctionalGroupsSequence") or []:
        measures = group.get("PixelMeasuresSequence")
        if measures and all("SliceThickness" not in item for item in measures):
            del group.PixelMeasuresSequence


def _reference_frame(seg: Dataset, header: Dataset, frame: int) -> None:
    """Make every source-image reference of ``seg`` name the view's ``frame`` of a source of a
    multi-frame IOD (NM is one, with one frame or two)."""
    if "NumberOfFrames" not in header:
        return
    for item in seg.PerFrameFunctionalGroupsSequence:
        for derivation in item.get("DerivationImageSequence") or []:
            for source in derivation.get("SourceImageSequence") or []:
                source.ReferencedFrameNumber = frame
