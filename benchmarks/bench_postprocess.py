"""analyse_scan time per 950 x 512 scan with ~30 instances, against a full-image baseline.

Run by hand: ``python benchmarks/bench_postprocess.py [--repeat 50]``. The baseline, measured in
the same run, paints every mask over the whole image and measures involvement with one
``np.isin`` per bone and view (the straightforward implementation); the ratio is what counts.
Target: analyse_scan <= 10 ms per scan on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

H, W = 950, 512
# (class id, rows, columns) per view, anterior coordinates; mirrored for the posterior half
REGIONS = [
    (1, (20, 140), (78, 178)),  # skull
    (2, (140, 560), (113, 143)),  # spine
    (3, (150, 400), (60, 196)),  # chest
    (4, (160, 380), (30, 62)),  # humerus, viewer's left
    (5, (160, 380), (194, 226)),  # humerus, viewer's right
    (8, (480, 640), (70, 186)),  # pelvis
    (9, (620, 800), (75, 181)),  # femurs
]


def synthetic_scan(n_lesions: int = 12, seed: int = 0) -> tuple[Instances, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    items = []
    for view in (0, 1):
        for cid, (r0, r1), (c0, c1) in REGIONS:
            if view:
                cid = {4: 7, 5: 6}.get(cid, cid)
                c0, c1 = 256 + (256 - c1), 256 + (256 - c0)
            cy, cx, ry, rx = (r0 + r1) / 2, (c0 + c1) / 2, (r1 - r0) / 2, (c1 - c0) / 2
            items.append(
                (cid, 0.6 + 0.4 * rng.random(), ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
            )
        items.append((10, 0.9, (yy - 420) ** 2 / 30**2 + (xx - 256 * view - 100) ** 2 / 18**2 <= 1))
    for _ in range(n_lesions):
        cy, cx, r = rng.integers(30, 800), rng.integers(40, 470), rng.integers(3, 9)
        items.append((11, 0.5 + 0.5 * rng.random(), (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r))
    ids, scores, masks = zip(*items, strict=True)
    masks = np.stack(masks)
    boxes = np.zeros((len(items), 4), np.float32)
    counts = rng.poisson(5.0, size=(H, W)).astype(np.float32)
    inst = Instances(H, W, boxes, np.array(scores, np.float32), np.array(ids, np.int64), masks)
    return inst, counts


def baseline(instances: Instances, counts: np.ndarray, taxonomy, match: bool = False) -> float:
    """The same analysis done the straightforward way: every step on the full image (paint,
    union, view halves, lesion regions, centroids) and one ``np.isin`` per bone and view."""
    from bsi_d2.postprocess.bsi import compute_bstbi
    from bsi_d2.postprocess.match import count_matched_lesions

    keep = instances.scores >= 0.5
    region = np.zeros((H, W), np.uint8)
    lesion = np.zeros((H, W), bool)
    for i in np.argsort(instances.scores, kind="stable"):
        if not keep[i]:
            continue
        cid = int(instances.category_ids[i])
        if cid in taxonomy.lesion_ids:
            lesion |= instances.masks[i]
        else:
            region[instances.masks[i]] = cid
    bsi = 0.0
    for bone, weight in taxonomy.weights.items():
        ids = [c.id for c in taxonomy.region_classes if c.bone == bone]
        per_view = []
        for cols in (slice(0, W // 2), slice(W // 2, W)):
            in_region = np.isin(region[:, cols], ids)
            area = np.count_nonzero(in_region)
            if area:
                per_view.append(np.count_nonzero(in_region & lesion[:, cols]) / area)
        bsi += (np.mean(per_view) if per_view else 0.0) * weight
    compute_bstbi(counts, lesion)
    views, centroids = [], []
    for i in np.flatnonzero(keep):
        m = instances.masks[i]
        left = np.count_nonzero(m[:, : W // 2])
        views.append("anterior" if left >= np.count_nonzero(m) - left else "posterior")
        if instances.category_ids[i] in taxonomy.lesion_ids:
            np.bincount(region[m], minlength=256).argmax()
            rr, cc = np.nonzero(m)
            centroids.append((rr.mean(), cc.mean()))
    if match:
        lesion_views = [v for v, i in zip(views, np.flatnonzero(keep), strict=True)
                        if instances.category_ids[i] in taxonomy.lesion_ids]  # fmt: skip
        cols = np.nonzero(region)[1]
        mid = {"anterior": cols[cols < W // 2].mean(), "posterior": cols[cols >= W // 2].mean()}
        count_matched_lesions(np.array(centroids), lesion_views, mid)
    return bsi


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--lesions", type=int, default=12)
    args = parser.parse_args()
    tax = load_taxonomy()
    inst, counts = synthetic_scan(args.lesions)
    ours = analyse_scan(inst, counts, tax)
    assert abs(ours.bsi.bsi - baseline(inst, counts, tax)) < 1e-9, "baseline disagrees"
    t_base = timed(lambda: baseline(inst, counts, tax), args.repeat)
    t_ours = timed(lambda: analyse_scan(inst, counts, tax), args.repeat)
    t_base_match = timed(lambda: baseline(inst, counts, tax, match=True), args.repeat)
    t_match = timed(lambda: analyse_scan(inst, counts, tax, match_views=True), args.repeat)
    print(f"instances per scan: {len(inst)} ({args.lesions} lesions), image {H} x {W}")
    print(f"baseline (full-image steps): {t_base * 1e3:7.2f} ms/scan")
    print(
        f"analyse_scan:               {t_ours * 1e3:7.2f} ms/scan  ({t_base / t_ours:.1f}x faster)"
    )
    print(
        f"analyse_scan --match-views: {t_match * 1e3:7.2f} ms/scan  ({t_base_match / t_match:.1f}x)"
    )
    print("target <= 10 ms/scan:", "met" if t_ours <= 0.010 else "NOT met")


if __name__ == "__main__":
    main()
