"""bsi_d2: instance segmentation of whole-body bone scans and the Bone Scan Index.

An aid for physicians reading bone scintigraphy; its outputs are not a diagnosis.
"""

__version__ = "0.1.0"
