"""Lesion source ablation of trained demos: Mask R-CNN lesions vs the dense branch vs both.

    bsi-d2 demo --out output/lesion --config-file mask_rcnn_R_18_FPN_cpu_lesion_bsi.yaml
    bsi-d2 demo --out output/rcnn                       # the same data, Mask R-CNN alone
    python tools/lesion_ablation.py output/lesion --baseline output/rcnn

Each source (``MODEL.LESION_HEAD.SOURCE`` rcnn, dense, union) reruns only the demo's predict and
evaluate stages on the lesion model's own phantoms, split and weights (under
``OUT/ablation/<source>/``); the table gives lesion Dice, lesion sensitivity at 1 false positive
per scan, BSI Pearson r, Bland-Altman bias and 95 % limits, s/iter of training and s/scan of
inference, in Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SOURCES = ("rcnn", "dense", "union")


def _summary(folder: Path) -> dict:
    return json.loads((folder / "demo_summary.json").read_text(encoding="utf-8"))


def rerun(demo: Path, source: str) -> Path:
    """The demo of ``demo`` with its lesions from ``source``: predict and evaluate only."""
    from bsi_d2.workflows.demo import rerun_demo

    out = demo / "ablation" / source
    rerun_demo(demo, out, opts=["MODEL.LESION_HEAD.SOURCE", source])
    return out


def row(name: str, folder: Path) -> str:
    from bsi_d2.evaluation import bsi_agreement

    summary = _summary(folder)
    m = summary["metrics"]
    pairs = json.loads((folder / "evaluation" / "bsi_pairs.json").read_text(encoding="utf-8"))
    agreement = bsi_agreement([p for _, p, _ in pairs], [t for _, _, t in pairs])
    train = json.loads((folder / "stages" / "train.json").read_text(encoding="utf-8"))
    s_iter = (train.get("result") or {}).get("seconds_per_iter")
    scans = m["test_scans"] + m.get("qc_failed_scans", 0)
    predict = json.loads((folder / "stages" / "predict.json").read_text(encoding="utf-8"))
    s_scan = predict.get("seconds", np.nan) / max(scans, 1)

    def f(v, digits=3):
        return "n/a" if v is None else f"{v:.{digits}f}"

    return (
        f"| {name} | {f(m['lesion_dice'])} | {f(m.get('lesion_sensitivity_at_1fp'))} | "
        f"{f(m['bsi_pearson_r'])} | {f(agreement['mean_difference'], 2)} "
        f"({f(agreement['loa_lower'], 2)} to {f(agreement['loa_upper'], 2)}) | "
        f"{f(s_iter, 2)} | {f(s_scan, 2)} | {m.get('qc_failed_scans', 0)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="a finished demo of a LesionRCNN config")
    parser.add_argument("--baseline", type=Path, help="a finished demo of Mask R-CNN alone")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    args = parser.parse_args()
    rows = []
    if args.baseline:
        rows.append(row("Mask R-CNN alone (GeneralizedRCNN)", args.baseline))
    for source in args.sources:
        rows.append(row(f"LesionRCNN, lesions from {source}", rerun(args.demo, source)))
    print(
        "| run | lesion Dice | lesion sensitivity at 1 FP/scan | BSI r | "
        "BSI bias (95 % limits) | s/iter | s/scan | QC failed |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
