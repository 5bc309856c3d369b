"""Seconds per training iteration of the torchvision and detectron2 engines, same config and
data, measured in one run (detectron2 only where it is installed).

Run by hand::

    bsi-d2 phantom --scans 24 --out /tmp/ph && bsi-d2 convert /tmp/ph/labelme --out /tmp/phcoco
    python benchmarks/bench_engines.py --data /tmp/phcoco [--config-file C] [--iters 40] \
        [KEY VALUE ...]

Both engines train ``--iters`` iterations from the same seed into fresh folders, alternating
for ``--rounds`` rounds so that load from other processes hits both alike; a round's figure is
the median "time" (whole iteration, data included) of metrics.json lines after the first 20
iterations, which both engines log as a median over their last 20, and an engine's figure is
its best round. Printed: sec/iter per engine and round, and the ratio torchvision / detectron2
(> 1: torchvision slower).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 20


def seconds_per_iter(output_dir: Path) -> float:
    lines = [
        json.loads(line)
        for line in (output_dir / "metrics.json").read_text().splitlines()
        if line.strip()
    ]
    times = [m["time"] for m in lines if "time" in m and m["iteration"] >= WINDOW]
    if not times:
        raise SystemExit(
            f"{output_dir}: no timed iteration after the first {WINDOW}; raise --iters"
        )
    return statistics.median(times)


def run_engine(engine: str, args: argparse.Namespace, output_dir: Path) -> float:
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine import get_engine

    opts = [
        *args.opts,
        "MODEL.ENGINE", engine,
        "BSI.DATASET_ROOT", str(args.data),
        "OUTPUT_DIR", str(output_dir),
        "SOLVER.MAX_ITER", str(args.iters),
        "SOLVER.CHECKPOINT_PERIOD", str(args.iters * 10),
        "DATASETS.TEST", "()",
        "SEED", "0",
    ]  # fmt: skip
    cfg = setup_cfg(args.config_file, opts)
    get_engine(cfg).train(cfg, resume=False)
    return seconds_per_iter(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config-file", default=str(ROOT / "configs" / "mask_rcnn_R_18_FPN_cpu_bsi.yaml")
    )
    parser.add_argument("--data", type=Path, required=True, help="bsi-d2 convert output folder")
    parser.add_argument("--iters", type=int, default=40, help="iterations per engine (>= 40)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per engine")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()

    engines = ["torchvision"]
    if importlib.util.find_spec("detectron2") is not None:
        engines.append("detectron2")
    else:
        print("detectron2 is not installed: measuring the torchvision engine only")
    rounds: dict[str, list[float]] = {engine: [] for engine in engines}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in engines:
                rounds[engine].append(run_engine(engine, args, Path(tmp) / f"{engine}{r}"))
                print(f"round {r}  {engine:12s} {rounds[engine][-1]:.3f} s/iter", flush=True)
    results = {engine: min(times) for engine, times in rounds.items()}
    for engine, best in results.items():
        print(f"{engine:12s} {best:.3f} s/iter (best of {args.rounds})")
    if len(results) == 2:
        ratio = results["torchvision"] / results["detectron2"]
        print(f"ratio torchvision / detectron2: {ratio:.2f}x")


if __name__ == "__main__":
    main()
