"""Synthetic whole-body bone scans with exact ground truth (the toolkit's built-in data).

``generate_phantom(index, seed)`` makes one patient in memory; ``write_phantoms(out, n, seed)``
writes DICOM, merged images, Labelme and truth files (``bsi-d2 phantom``), with ``follow_up=K``
later studies of each patient (``follow_up_series``). Synthetic data: it shows what the toolkit
does, never what a real patient has.
"""

from bsi_d2.phantom.folder import write_phantoms
from bsi_d2.phantom.followup import follow_up_series
from bsi_d2.phantom.generate import Phantom, generate_phantom, patient_id, write_phantom

__all__ = [
    "Phantom",
    "follow_up_series",
    "generate_phantom",
    "patient_id",
    "write_phantom",
    "write_phantoms",
]
