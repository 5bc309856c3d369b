"""Archive-scale ``bsi-d2 predict``: 10,000 phantom scans with the replay predictor, memory, a kill
at a random point and its rerun, and two shards against one run.

Run by hand (minutes to an hour, and about 1 MB of disk per input scan plus the outputs)::

    python benchmarks/bench_archive.py --work /tmp/archive [--scans 10000] [--base 500]
        [--outputs bsi,csv,index] [--checks full,kill,shards] [--seed 0]

``--base`` phantoms are made with ``bsi-d2 phantom`` and replicated under distinct names into
folders of 1,000, each copy given its own SOPInstanceUID (same pixels, so the recording made from
the phantoms' truth answers for it; other bytes, so its content key is its own and no copy is
skipped as a duplicate). Then, each a ``bsi-d2 predict --replay`` subprocess:

1. ``full``: one uninterrupted run: wall time, scans/s, RSS when 1k, 5k and 10k scans are done
   (and the peak);
2. ``kill``: a run killed with SIGKILL at a random point, rerun to the end: its folder must equal
   the uninterrupted one file for file (nothing lost, nothing duplicated);
3. ``shards``: ``--shard 0/2`` and ``--shard 1/2`` at once into one folder: the same union.
The baseline of every ratio is the uninterrupted run, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

PER_FOLDER = 1000
MARKS = (1000, 5000, 10000)


def prepare(work: Path, scans: int, base: int) -> tuple[Path, Path]:
    """The replicated archive and the recording, made once and reused."""
    from bsi_d2.inference.replay import distinct_copy, phantom_recording, save_recording
    from bsi_d2.phantom import write_phantoms
    from bsi_d2.taxonomy import load_taxonomy

    phantoms, recording, archive = work / "phantoms", work / "recording.jsonl", work / "archive"
    if not (phantoms / "manifest.json").is_file():
        write_phantoms(phantoms, base, seed=0, workers=2)
    if not recording.is_file():
        save_recording(recording, phantom_recording(phantoms, load_taxonomy()))
    sources = sorted((phantoms / "dicom").glob("*.dcm"))[:base]
    done = archive / f".{scans}"
    if not done.is_file():
        for n in range(scans):
            copy, source = divmod(n, len(sources))
            target = archive / f"part{n // PER_FOLDER:03d}" / f"scan{n:06d}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(distinct_copy(sources[source].read_bytes(), copy, source))
        done.write_text("")
    return archive, recording


def predict_argv(archive: Path, recording: Path, out: Path, outputs: str, *extra: str) -> list:
    return [sys.executable, "-m", "bsi_d2.cli", "predict", str(archive), "--replay",
            str(recording), "--out", str(out), "--outputs", outputs, "--no-progress",
            *extra]  # fmt: skip


def started(out: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(out / "scans"))
    except FileNotFoundError:
        return 0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_full(argv: list, out: Path, scans: int) -> dict:
    """One watched run: wall time, RSS at each mark, peak RSS (the kernel's, via wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marks, rss = [m for m in MARKS if m <= scans] or [scans], {}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        n = started(out)
        for m in marks:
            if m not in rss and n >= m:
                rss[m] = rss_mb(proc.pid)
        time.sleep(0.5)
    wall = time.perf_counter() - start
    return {"wall": wall, "rss": rss, "rc": os.waitstatus_to_exitcode(status), "peak": usage}


def peak_rss_mb(argv: list) -> tuple[float, float, int]:
    """Wall time, peak RSS (MB) and exit status of one run, by ``wait4``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def same_folders(a: Path, b: Path) -> list[str]:
    """Files that differ between two output folders (by name and bytes), [] when the same."""
    differ = []

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        differ.extend(f"{prefix}{n} (only one side)" for n in cmp.left_only + cmp.right_only)
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, False)
        differ.extend(f"{prefix}{n}" for n in mismatch + errors)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b, ignore=["errors"]), "")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for inputs and outputs")
    parser.add_argument("--scans", type=int, default=10000)
    parser.add_argument("--base", type=int, default=500, help="distinct phantoms replicated")
    parser.add_argument("--outputs", default="all", help="predict --outputs (e.g. bsi,csv,index)")
    parser.add_argument("--checks", default="full,kill,shards")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill time")
    args = parser.parse_args()
    checks = set(args.checks.split(","))

    start = time.perf_counter()
    archive, recording = prepare(args.work, args.scans, args.base)
    print(f"{args.scans} scans ({args.base} phantoms replicated) in {archive}, ready in "
          f"{time.perf_counter() - start:.0f} s; outputs {args.outputs}; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    full = args.work / "out_full"
    if "full" in checks or not full.is_dir():
        subprocess.run(["rm", "-rf", str(full)], check=True)
        res = run_full(predict_argv(archive, recording, full, args.outputs), full, args.scans)
        wall = res["wall"]
        peak = res["peak"].ru_maxrss / 1024
        rss = ", ".join(f"{m} scans {v:.0f} MB" for m, v in sorted(res["rss"].items()))
        print(f"full run: {wall:.0f} s, {args.scans / wall:.1f} scans/s, exit {res['rc']}; "
              f"RSS at {rss}; peak {peak:.0f} MB (the baseline)")  # fmt: skip
    else:
        wall = float("nan")
    if "kill" in checks:
        out = args.work / "out_kill"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        delay = random.Random(args.seed).uniform(0.2, 0.8) * (wall if wall == wall else 60)
        proc = subprocess.Popen(predict_argv(archive, recording, out, args.outputs),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        proc.kill()
        proc.wait()
        finished = len(list((out / "scans").glob("*/bsi.json")))
        rerun, peak, rc = peak_rss_mb(predict_argv(archive, recording, out, args.outputs))
        differ = same_folders(full, out)
        print(f"kill after {delay:.0f} s ({finished} scans finished), rerun {rerun:.0f} s "
              f"(exit {rc}, peak {peak:.0f} MB): {len(differ)} files differ from the full run"
              + (f": {differ[:5]}" if differ else " (identical)"))  # fmt: skip
    if "shards" in checks:
        out = args.work / "out_shards"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        begin = time.perf_counter()
        procs = [subprocess.Popen(predict_argv(archive, recording, out, args.outputs, "--shard",
                                               f"{i}/2"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(2)]  # fmt: skip
        codes = [p.wait() for p in procs]
        took = time.perf_counter() - begin
        differ = same_folders(full, out)
        print(f"2 shards at once: {took:.0f} s ({args.scans / took:.1f} scans/s, exits {codes}): "
              f"{len(differ)} files differ from the full run"
              + (f": {differ[:5]}" if differ else " (identical union)"))  # fmt: skip


if __name__ == "__main__":
    main()
