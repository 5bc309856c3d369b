"""Follow-up of a patient's bone scans: skeletons aligned, lesions matched (new, no longer seen,
persistent), BSI and BSTBI changes per pair of studies, worded for the physician to confirm.

Reads the bsi.json records of ``predict`` / ``bsi`` output folders; ``bsi-d2 followup``.
"""

from bsi_d2.followup.align import Alignment, align_studies
from bsi_d2.followup.compare import (
    FollowupError,
    FollowupOptions,
    FollowupResult,
    Study,
    build_studies,
    follow_up,
)
from bsi_d2.followup.match import LesionChanges, match_lesions
from bsi_d2.followup.report import write_followup

__all__ = [
    "Alignment",
    "FollowupError",
    "FollowupOptions",
    "FollowupResult",
    "LesionChanges",
    "Study",
    "align_studies",
    "build_studies",
    "follow_up",
    "match_lesions",
    "write_followup",
]
