"""Phantom generation speed: scans per second in one process and in a process pool.

    python benchmarks/bench_phantom.py --scans 40 --workers 2 [--difficulty hard]

Run by hand. Both timings are taken in the same run, so the printed ratio (pool / single)
holds on any machine even where absolute numbers do not.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bsi_d2.phantom import write_phantoms


def timed(n: int, workers: int, seed: int, difficulty: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        written = write_phantoms(Path(tmp), n, seed=seed, workers=workers, difficulty=difficulty)
        elapsed = time.perf_counter() - start
    if len(written) != n:
        raise RuntimeError(f"only {len(written)} of {n} phantoms were written")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=40, help="phantoms per timing")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", default="standard", help="standard or hard")
    args = parser.parse_args()
    single = timed(args.scans, 1, args.seed, args.difficulty)
    pool = timed(args.scans, args.workers, args.seed, args.difficulty)
    print(
        f"{args.scans} {args.difficulty} phantoms (DICOM + PNGs + Labelme + truth each), "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  single process : {single:6.1f} s  {args.scans / single:6.2f} scans/s")
    print(f"  {args.workers} workers      : {pool:6.1f} s  {args.scans / pool:6.2f} scans/s")
    print(f"  pool / single speed-up: {single / pool:.2f}x")
    print(f"  projected time for 200 scans with the pool: {200 * pool / args.scans:.0f} s")
    if args.difficulty != "standard":
        baseline = timed(args.scans, args.workers, args.seed, "standard")
        print(
            f"  standard preset, same pool: {args.scans / baseline:6.2f} scans/s; "
            f"{args.difficulty} / standard time: {pool / baseline:.2f}x"
        )


if __name__ == "__main__":
    main()
