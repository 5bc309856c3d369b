"""What a folder of phantoms holds: disease burden, lesions, look-alikes and counts, as Markdown.

    bsi-d2 phantom --scans 200 --difficulty hard --out datasets/phantoms_hard
    python tools/phantom_stats.py datasets/phantoms_hard

Reads only the truth files ``bsi-d2 phantom`` wrote; prints the table the README shows.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np


def percentiles(values, qs=(0, 25, 50, 75, 90, 95, 100), fmt="{:.2f}") -> str:
    if not len(values):
        return "-"
    return " / ".join(fmt.format(v) for v in np.percentile(values, qs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder bsi-d2 phantom wrote")
    args = parser.parse_args()
    truths = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((args.folder / "truth").glob("*.json"))
    ]
    n = len(truths)
    bsi = np.array([t["bsi"] for t in truths])
    ref = np.array([t["reference"]["bsi"] for t in truths])
    bstbi = np.array([t["bstbi"] for t in truths])
    counts = np.array([t["lesion_count"] for t in truths])
    metastases = np.array([t["reference"]["metastases"] for t in truths])
    lesions = [m for t in truths for m in t["lesions"]]
    sizes = np.array([m["diameter_mm"] for m in lesions if m["kind"] in ("focal", "confluent")])
    contrast = np.array([m["intensity"] for m in lesions if m["kind"] in ("focal", "confluent")])
    drawn = [m for m in lesions if m["views"]]
    outside = sum(1 for m in lesions if m["outside_regions"])
    looks = [[k["kind"] for k in t["lookalikes"] if k["kind"] != "bladder"] for t in truths]
    kinds = Counter(k for ks in looks for k in set(ks))
    cold = Counter(c["kind"] for t in truths for c in t.get("cold_spots", []))
    patterns = Counter(t["disease_pattern"] for t in truths)
    total = np.array([t["parameters"]["total_counts"] / 2e6 for t in truths])
    diff = bsi - ref
    difficulty = {t.get("difficulty", "standard") for t in truths}
    print(f"{n} phantoms ({', '.join(sorted(difficulty))}), {args.folder}\n")
    print("| measure | value |")
    print("| --- | --- |")
    rows = [
        ("percentiles shown", "min / 25 / 50 / 75 / 90 / 95 / max"),
        ("BSI, image-space truth (%)", percentiles(bsi)),
        ("BSI, geometric reference (%)", percentiles(ref)),
        (
            "scans with BSI 0 / > 1 % / > 5 % / > 10 %",
            " / ".join(
                str(int(x))
                for x in ((ref == 0).sum(), (ref > 1).sum(), (ref > 5).sum(), (ref > 10).sum())
            ),
        ),
        (
            "image-space minus reference BSI, mean ± SD (95 % limits)",
            f"{diff.mean():+.3f} ± {diff.std(ddof=1):.3f} "
            f"({diff.mean() - 1.96 * diff.std(ddof=1):+.2f} to "
            f"{diff.mean() + 1.96 * diff.std(ddof=1):+.2f})",
        ),
        ("BSTBI", percentiles(bstbi)),
        ("metastases per scan (all)", percentiles(metastases, fmt="{:.0f}")),
        ("lesions per scan (labelled, image truth)", percentiles(counts, fmt="{:.0f}")),
        (
            "focal lesion diameter, equivalent disc after fitting to the bone (mm)",
            percentiles(sizes, fmt="{:.1f}"),
        ),
        ("focal lesion contrast (added uptake / bone)", percentiles(contrast)),
        (
            "metastases drawn by the annotator (seen in a view)",
            f"{len(drawn)} of {len(lesions)} ({len(drawn) / max(len(lesions), 1):.0%})",
        ),
        (
            "metastases outside every BSI region",
            f"{outside} of {len(lesions)} ({outside / max(len(lesions), 1):.1%})",
        ),
        ("disease pattern (scans)", ", ".join(f"{k} {v}" for k, v in patterns.most_common())),
        (
            "look-alikes per scan besides the bladder",
            f"mean {np.mean([len(k) for k in looks]):.1f}, "
            f"max {max((len(k) for k in looks), default=0)}",
        ),
        ("scans with each look-alike", ", ".join(f"{k} {v}" for k, v in kinds.most_common())),
        ("cold spots in all", ", ".join(f"{k} {v}" for k, v in cold.most_common()) or "none"),
        ("counts per view, mean of the two views (Mcts)", percentiles(total)),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
