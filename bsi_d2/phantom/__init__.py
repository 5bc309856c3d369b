"""Synthetic whole-body bone scans with exact ground truth (the toolkit's built-in data).

``generate_phantom(index, seed)`` makes one patient in memory; ``write_phantoms(out, n, seed)``
writes DICOM, merged images, Labelme and truth files (``bsi-d2 phantom``). Synthetic data: it
shows what the toolkit does, never what a real patient has.
"""

from bsi_d2.phantom.generate import (
    Phantom,
    generate_phantom,
    patient_id,
    write_phantom,
    write_phantoms,
)

__all__ = ["Phantom", "generate_phantom", "patient_id", "write_phantom", "write_phantoms"]
