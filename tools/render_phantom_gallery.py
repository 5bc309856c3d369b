"""Draw a few phantoms (anterior and posterior count views) beside the real NEMA NM1 scan.

    python tools/render_phantom_gallery.py --out docs/phantoms.png

Every view gets the same windowing rule (inverted grey, 0 .. 99th percentile of in-body counts),
so the phantoms and the real scan compare fairly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bsi_d2.phantom import generate_phantom

ROWS = slice(40, 1000)  # the body in every view; the empty margins add nothing
NEMA = Path("/work/shared/data/nema-nm1/nema-nm1_j2kr.dcm")


def window_max(counts: np.ndarray) -> float:
    inside = counts[counts > 2]
    return float(np.percentile(inside, 99.0)) if inside.size else 1.0


def pick(seed: int, search: int) -> list[tuple[int, str]]:
    """Indices showing lesions, no lesion, each arm pose and a low-count scan."""

    def normal(p):
        return not p.parameters["low_count"]

    wanted = {
        "many lesions, arms down": lambda p: (
            p.truth["lesion_count"] >= 8 and p.parameters["arm_pose"] == "down" and normal(p)
        ),
        "no lesion": lambda p: p.truth["lesion_count"] == 0 and normal(p),
        "arms away": lambda p: p.parameters["arm_pose"] == "away" and normal(p),
        "arms crossed": lambda p: p.parameters["arm_pose"] == "crossed" and normal(p),
        "low count": lambda p: p.parameters["low_count"] and p.truth["lesion_count"] > 0,
    }
    chosen: list[tuple[int, str]] = []
    for i in range(search):
        if not wanted:
            break
        p = generate_phantom(i, seed)
        for name, test in list(wanted.items()):
            if test(p):
                chosen.append((i, name))
                del wanted[name]
                break
    return chosen


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pydicom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/phantoms.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", type=int, default=60, help="patients to look through")
    parser.add_argument("--nema", type=Path, default=NEMA)
    args = parser.parse_args()

    chosen = pick(args.seed, args.search)
    panels: list[tuple[str, np.ndarray]] = []
    for index, why in chosen:
        p = generate_phantom(index, args.seed)
        info = (
            f"{p.patient}\n{why}; {p.truth['lesion_count']} mets\n"
            f"{p.parameters['total_counts'] / 1e6:.1f} Mcts, BSI {p.truth['bsi']:.2f}"
        )
        panels.append((f"{info}\nanterior", p.anterior))
        panels.append(("\n\n\nposterior", p.posterior))
    if args.nema.is_file():
        real = pydicom.dcmread(args.nema).pixel_array.astype(np.float32)
        panels.append((f"REAL: NEMA NM1\n(anterior)\n{real.sum() / 1e6:.1f} Mcts\n", real))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.5 * len(panels), 7.4))
    for ax, (title, counts) in zip(axes, panels, strict=True):
        ax.imshow(
            counts[ROWS], cmap="gray_r", vmin=0, vmax=window_max(counts), interpolation="nearest"
        )
        ax.set_title(title, fontsize=6.5)
        ax.set_axis_off()
    fig.suptitle(
        "bsi_d2 synthetic whole-body bone scans (phantoms) beside a real scan; "
        "same windowing for all",
        fontsize=9,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({', '.join(f'{i}: {w}' for i, w in chosen)})")


if __name__ == "__main__":
    main()
