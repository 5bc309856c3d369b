"""Hand-drawn instances on a 20 x 40 merged image for the post-processing tests: columns
0..19 are the anterior view, 20..39 the posterior one."""

import numpy as np

from bsi_d2.structures.instances import Instances

H, W = 20, 40


def box(r0, r1, c0, c1):
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def make(*items):
    """Instances from (class id, score, mask) triples."""
    if not items:
        return Instances.empty(H, W)
    ids, scores, masks = zip(*items, strict=True)
    masks = np.stack(masks)
    boxes = np.array([[0, 0, 1, 1]] * len(items), np.float32)  # deliberately not tight
    return Instances(H, W, boxes, np.array(scores, np.float32), np.array(ids, np.int64), masks)
