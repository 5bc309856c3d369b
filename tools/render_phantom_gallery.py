"""Draw hard phantoms (anterior and posterior count views) beside the real NEMA NM1 scan, and
compare their count histograms.

    python tools/render_phantom_gallery.py --out docs/phantoms.png \
        --histogram docs/phantom_counts.png

Every view gets the same windowing rule (inverted grey, 0 .. 99th percentile of in-body counts),
so the phantoms and the real scan compare fairly. The histogram figure and the printed Markdown
table use one rule for both: the body is where the counts blurred by 4 px exceed 3; background
is everything 4 px or more outside it; in-body counts are divided by their median, so scans of
different count levels compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bsi_d2.phantom import generate_phantom

ROWS = slice(40, 1000)  # the body in every view; the empty margins add nothing
NEMA = Path(__file__).resolve().parents[1].parent / "shared/data/nema-nm1/nema-nm1_j2kr.dcm"
PERCENTILES = (10, 25, 50, 75, 90, 95, 99, 99.9)
KEYS = ("background", "body_fraction", "median", "percentiles")


def window_max(counts: np.ndarray) -> float:
    inside = counts[counts > 2]
    return float(np.percentile(inside, 99.0)) if inside.size else 1.0


def body_and_background(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    body = cv2.GaussianBlur(counts.astype(np.float32), (0, 0), 4) > 3
    grown = cv2.dilate(body.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    return body, ~grown


def count_profile(counts: np.ndarray) -> dict:
    body, background = body_and_background(counts)
    inside = counts[body].astype(np.float64)
    median = float(np.median(inside))
    return {
        "background": float(counts[background].mean()),
        "body_fraction": float(body.mean()),
        "median": median,
        "relative": inside / median,
        "percentiles": np.percentile(inside, PERCENTILES) / median,
    }


def pick(seed: int, search: int) -> list[tuple[int, str]]:
    """Indices showing low, medium and extensive burden, a superscan and look-alikes."""

    def ref(p):
        return p.truth["reference"]["bsi"]

    def benign(p):
        return sum(1 for k in p.truth["lookalikes"] if k["kind"] != "bladder")

    wanted = {
        "low burden": lambda p: 0.1 < ref(p) < 1.0 and p.truth["disease_pattern"] == "focal",
        "medium burden": lambda p: 2.0 < ref(p) < 6.0,
        "extensive": lambda p: p.truth["disease_pattern"] == "extensive" and ref(p) > 6.0,
        "superscan": lambda p: p.truth["superscan"],
        "no metastasis, look-alikes": lambda p: ref(p) == 0.0 and benign(p) >= 4,
    }
    chosen: list[tuple[int, str]] = []
    for i in range(search):
        if not wanted:
            break
        p = generate_phantom(i, seed, difficulty="hard")
        for name, test in list(wanted.items()):
            if test(p):
                chosen.append((i, name))
                del wanted[name]
                break
    return chosen


def read_nema(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    import pydicom

    return pydicom.dcmread(path).pixel_array.astype(np.float32)


def gallery(args, chosen, real) -> None:
    import matplotlib.pyplot as plt

    panels: list[tuple[str, np.ndarray]] = []
    for index, why in chosen:
        p = generate_phantom(index, args.seed, difficulty="hard")
        looks = sorted({k["kind"] for k in p.truth["lookalikes"] if k["kind"] != "bladder"})
        info = (
            f"{p.patient}: {why}\n{p.truth['lesion_count']} lesions drawn, "
            f"BSI {p.truth['bsi']:.1f} (ref. {p.truth['reference']['bsi']:.1f})\n"
            f"{p.anterior.sum() / 1e6:.1f} Mcts; look-alikes:\n"
            + ("\n".join(", ".join(looks[i : i + 2]) for i in range(0, len(looks), 2)) or "-")
        )
        panels.append((f"{info}\nanterior", p.anterior))
        panels.append(("posterior", p.posterior))
    if real is not None:
        panels.append((f"REAL: NEMA NM1\n(anterior)\n{real.sum() / 1e6:.1f} Mcts", real))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.55 * len(panels), 8.2))
    for ax, (title, counts) in zip(axes, panels, strict=True):
        ax.imshow(
            counts[ROWS], cmap="gray_r", vmin=0, vmax=window_max(counts), interpolation="nearest"
        )
        ax.set_title(title, fontsize=5.5, loc="left")
        ax.set_axis_off()
    fig.suptitle(
        "bsi_d2 hard phantoms (bsi-d2 phantom --difficulty hard, seed "
        f"{args.seed}) beside a real scan; same windowing for all",
        fontsize=9,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({', '.join(f'{i}: {w}' for i, w in chosen)})")


def histogram(args, real) -> None:
    import matplotlib.pyplot as plt

    profiles = {"standard": [], "hard": []}
    for difficulty in profiles:
        for i in range(args.histogram_scans):
            p = generate_phantom(i, args.seed, difficulty=difficulty)
            profiles[difficulty].append(count_profile(p.anterior))
    rows = []
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 12, 121)
    if real is not None:
        nema = count_profile(real)
        ax.hist(nema["relative"], bins, density=True, histtype="step", lw=2, color="k",
                label="NEMA NM1 (real, anterior)")  # fmt: skip
        rows.append(("NEMA NM1 (real)", *(nema[k] for k in KEYS)))
    for difficulty, colour in (("hard", "tab:red"), ("standard", "tab:blue")):
        pooled = np.concatenate([q["relative"] for q in profiles[difficulty]])
        ax.hist(pooled, bins, density=True, histtype="step", lw=1.3, color=colour,
                label=f"{difficulty} phantoms ({args.histogram_scans}, anterior)")  # fmt: skip
        summary = [np.median([q[k] for q in profiles[difficulty]], axis=0) for k in KEYS]
        rows.append((f"{difficulty} phantoms, median of {args.histogram_scans}", *summary))
    ax.set_yscale("log")
    ax.set_xlabel("in-body counts / the scan's in-body median")
    ax.set_ylabel("density")
    ax.set_title("Count histograms inside the body, phantoms vs the real scan", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.histogram, dpi=110)
    print(f"wrote {args.histogram}\n")
    head = " | ".join(f"p{q:g}" for q in PERCENTILES)
    print(
        "| scan | background, counts/px | body share of the view | in-body median, counts/px "
        f"| {head} (of the median) |"
    )
    print("| --- " * (4 + len(PERCENTILES)) + "|")
    for name, bg, frac, median, pct in rows:
        cells = " | ".join(f"{v:.2f}" for v in pct)
        print(f"| {name} | {bg:.2f} | {frac:.2f} | {median:.1f} | {cells} |")


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/phantoms.png"))
    parser.add_argument("--histogram", type=Path, default=Path("docs/phantom_counts.png"))
    parser.add_argument("--histogram-scans", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", type=int, default=120, help="patients to look through")
    parser.add_argument("--nema", type=Path, default=NEMA)
    args = parser.parse_args()
    real = read_nema(args.nema)
    gallery(args, pick(args.seed, args.search), real)
    histogram(args, real)


if __name__ == "__main__":
    main()
