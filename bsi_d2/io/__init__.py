"""Reading and writing files: DICOM, images, Labelme, PNG, atomic files, pseudonyms, limits.

Importing the package registers every scan reader in :data:`bsi_d2.io.base.READERS`, whichever
of its modules a caller imports first; a new reader's module is added here.
"""

from bsi_d2.io import dicom, readers  # noqa: F401  (their classes register themselves)
