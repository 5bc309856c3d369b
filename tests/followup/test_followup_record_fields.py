"""The record fields follow-up reads, on a hand-drawn scan: skeleton landmarks per view and
region, and each lesion's centroid and box per view it is seen in."""

import numpy as np

from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()


def test_landmarks_and_lesion_positions_are_exact_on_a_hand_drawn_scan():
    height, width = 40, 64  # anterior columns 0-31, posterior 32-63
    spine_front = np.zeros((height, width), bool)
    spine_front[10:30, 14:18] = True  # centroid (15.5, 19.5)
    spine_back = np.zeros((height, width), bool)
    spine_back[10:30, 46:50] = True
    spot = np.zeros((height, width), bool)
    spot[12:15, 15:17] = True  # centroid (15.5, 13.0), box [15, 12, 17, 15)
    spine = TAX.by_name("spine").id
    instances = Instances.from_masks(
        height, width, [spine, spine, TAX.lesion_ids[0]], [spine_front, spine_back, spot]
    )
    record = analyse_scan(instances, None, TAX).record
    assert record["landmarks"] == {
        "anterior": {"spine": {"centroid": [15.5, 19.5], "pixels": 80, "bbox": [14, 10, 18, 30]}},
        "posterior": {"spine": {"centroid": [47.5, 19.5], "pixels": 80, "bbox": [46, 10, 50, 30]}},
    }
    (lesion,) = record["lesions"]
    assert lesion["centroid"] == {"anterior": [15.5, 13.0]}
    assert lesion["bbox"] == {"anterior": [15, 12, 17, 15]}
