"""Labelme -> COCO conversion speed, run by hand: ``python benchmarks/bench_convert.py``.

Makes ~300 realistic 950 x 512 annotation files (8-bit display PNG plus 16-bit counts sibling,
~20 shapes each, written with
:func:`bsi_d2.io.labelme.write_labelme`), converts them with bsi_d2 and, where labelme is
installed, does labelme's own per-file work on the same files in the same run (``LabelFile``
load, ``labelme.utils.shape_to_mask`` per shape, pycocotools encode, area and box: what its
example labelme2coco does per file), then prints files/s and the ratio. Target: >= 100 files/s
on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bsi_d2.data.convert import convert_labelme_folder
from bsi_d2.io.labelme import labelme_shape, write_labelme
from bsi_d2.taxonomy import load_taxonomy

HEIGHT, WIDTH = 950, 512


def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, n: int) -> np.ndarray:
    """A star-shaped polygon like a hand-drawn outline: n vertices at jittered radii."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius * rng.uniform(0.7, 1.0, n)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def make_dataset(root: Path, files: int, shapes: int, seed: int = 0) -> None:
    """Each scan as our preprocessing leaves it: an 8-bit display PNG (what annotators open in
    labelme, which cannot show 16-bit PNGs) with its 16-bit ``.counts.png`` beside it."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    names = load_taxonomy().thing_classes
    counts = rng.poisson(40, size=(HEIGHT, WIDTH)).astype(np.uint16)
    encoded = {}
    for key, array in (
        ("display", np.clip(counts * 3, 0, 255).astype(np.uint8)),
        ("counts", counts),
    ):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        encoded[key] = buf.getvalue()
    for i in range(files):
        stem = f"patient_{i // 50:02d}/scan_{i:04d}"
        image = root / f"{stem}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(encoded["display"])
        (root / f"{stem}.counts.png").write_bytes(encoded["counts"])
        entries = []
        for j in range(shapes):
            label = names[j % len(names)]
            cx, cy = rng.uniform(40, WIDTH - 40), rng.uniform(40, HEIGHT - 40)
            if j % 10 == 8:
                entries.append(
                    labelme_shape(label, [(cx, cy), (cx + rng.uniform(4, 15), cy)], "circle")
                )
            elif j % 10 == 9:
                entries.append(
                    labelme_shape(label, [(cx - 20, cy - 30), (cx + 20, cy + 30)], "rectangle")
                )
            else:
                radius = rng.uniform(8, 60) if label != "lesion" else rng.uniform(3, 12)
                entries.append(labelme_shape(label, _blob(rng, cx, cy, radius, 40)))
        write_labelme(root / f"{stem}.json", Path(stem).name + ".png", HEIGHT, WIDTH, entries)


def labelme_reference(files: list[Path]) -> int:
    """labelme's per-file work of its labelme2coco example, serial as that script is."""
    import labelme
    import labelme.utils
    from loguru import logger
    from pycocotools import mask as mask_util

    logger.remove()  # labelme logs every image load at DEBUG level to stderr

    n = 0
    for path in files:
        label_file = labelme.LabelFile(filename=str(path))
        for shape in label_file.shapes:
            mask = labelme.utils.shape_to_mask(
                (HEIGHT, WIDTH), shape["points"], shape["shape_type"]
            )
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            mask_util.area(rle)
            mask_util.toBbox(rle)
            n += 1
    return n


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--shapes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        src = Path(tmp) / "src"
        start = time.perf_counter()
        make_dataset(src, args.files, args.shapes)
        print(f"made the dataset in {time.perf_counter() - start:.1f} s")
        print(
            f"{args.files} files x {args.shapes} shapes, {HEIGHT} x {WIDTH}, "
            f"{os.cpu_count()} CPU(s)"
        )
        print(f"load average at start: {os.getloadavg()[0]:.1f} (others' work slows wall time)")
        timings, cpu_ms = {}, {}
        for workers in sorted({1, args.workers}):
            start, cpu = time.perf_counter(), _cpu_seconds()
            report = convert_labelme_folder(src, Path(tmp) / f"out{workers}", workers=workers)
            timings[workers] = time.perf_counter() - start
            cpu_ms[workers] = 1000 * (_cpu_seconds() - cpu) / args.files
            assert report.files_converted == args.files, report.summary()
            print(
                f"bsi_d2 convert, {workers} worker(s): {timings[workers]:.2f} s, "
                f"{args.files / timings[workers]:.1f} files/s, {cpu_ms[workers]:.2f} CPU-ms/file "
                f"({sum(report.instances_per_class.values())} instances, "
                f"{len(report.repairs)} repairs)"
            )
        try:
            import labelme  # noqa: F401
        except ImportError:
            print("labelme not installed: no baseline (pip install 'bsi_d2[bench]')")
            return
        files = sorted(src.rglob("*.json"))
        start, cpu = time.perf_counter(), _cpu_seconds()
        labelme_reference(files)
        baseline = time.perf_counter() - start
        baseline_cpu_ms = 1000 * (_cpu_seconds() - cpu) / args.files
        print(
            f"labelme per-file work (serial): {baseline:.2f} s, "
            f"{args.files / baseline:.1f} files/s, {baseline_cpu_ms:.2f} CPU-ms/file"
        )
        for workers, seconds in timings.items():
            print(
                f"ratio labelme / bsi_d2 ({workers} worker(s)): wall {baseline / seconds:.2f}x, "
                f"CPU per file {baseline_cpu_ms / cpu_ms[workers]:.2f}x"
            )


if __name__ == "__main__":
    main()
