"""Where the repository's files and the shared real data are, for module-level constants and
``skipif`` marks; tests take the same paths from the fixtures in ``tests/conftest.py``."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
CPU_CONFIG = CONFIGS / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"
# the real NEMA NM1 whole-body scan, in ../shared beside the repository (not in it)
NEMA = REPO.parent / "shared" / "data" / "nema-nm1" / "nema-nm1_j2kr.dcm"
