"""Results back into the hospital: DICOM SR, SEG and Secondary Capture (``--dicom-out``) and
storing them to a PACS (``bsi-d2 store``). Needs ``pip install bsi_d2[dicom]`` (highdicom,
pynetdicom); imported only where those commands run."""
