"""A Secondary Capture of the overlay, for viewers that show no SEG: the regions and lesions
burned into the merged image, with a band that says what it is and that it is not a diagnosis.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from bsi_d2 import __version__

SC_SERIES_NUMBER = 9103
SC_SERIES_DESCRIPTION = "bsi_d2 overlay (aid, not a diagnosis)"
MANUFACTURER = "bsi_d2"
BAND_LINES = (
    "bsi_d2 segmentation overlay - an aid for a physician, not a diagnosis",
    "regions coloured, lesions outlined in red",
)
BAND_HEIGHT = 34


def burn_in_band(overlay: np.ndarray, lines=BAND_LINES, bsi: float | None = None) -> np.ndarray:
    """``overlay`` (H, W, 3) uint8 with a black band above it holding ``lines`` (and the BSI)."""
    import cv2

    text = list(lines) + ([f"BSI {bsi:.2f} %"] if bsi is not None else [])
    height = BAND_HEIGHT + 14 * max(0, len(text) - 2)
    band = np.zeros((height, overlay.shape[1], 3), np.uint8)
    for i, line in enumerate(text):
        cv2.putText(band, line, (4, 13 + 14 * i), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
    return np.concatenate([band, np.asarray(overlay, np.uint8)], axis=0)


def build_capture(
    image: np.ndarray, header: Dataset, series_uid: str, instance_uid: str, model_name: str
) -> Dataset:
    """The Secondary Capture of ``image`` (RGB, already burned in) in ``header``'s patient and
    study."""
    import highdicom as hd

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=np.ascontiguousarray(image, np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        # highdicom asks for a coordinate system: the merged image's rows run head to feet
        # and its anterior half's columns towards the patient's left
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "F"),
        series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=f"{MANUFACTURER} {model_name}"[:64],
        software_versions=__version__,
    )
    sc.BurnedInAnnotation = "YES"
    if "Laterality" not in sc:  # Type 2C: both sides are in the image
        sc.Laterality = ""
    sc.ImageComments = BAND_LINES[0]
    return sc
