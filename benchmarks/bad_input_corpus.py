"""Run the bad-input corpus (tests/robustness/corpus.py) through the ``bsi-d2`` command line and
print one outcome per case and the counts per outcome.

    python benchmarks/bad_input_corpus.py                               # this checkout
    PYTHONPATH=/path/to/old/checkout python benchmarks/bad_input_corpus.py

Outcomes: clear (a sentence naming the file, good files done, exit 0), traceback (a traceback or
a bare exception name as the message), silent (no record: the bad file taken as a scan or
converted), aborted (the command raised, exited non-zero or lost a good file), memory (Python
peak over the bound). Only ``bsi_d2.cli.main`` and the files it writes are used, so an older
checkout runs too; an option it lacks is an argparse exit, counted as aborted.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS_FILE = ROOT / "tests" / "robustness" / "corpus.py"
CONFIG = ROOT / "configs" / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"
# a random model at a quarter of the resolution: the corpus tests reading, not segmenting
PREDICT_ARGV = [
    "--config-file", str(CONFIG), "--batch-size", "4", "--no-progress", "--score-thresh", "0.5",
    "--opts", "MODEL.ENGINE", "torchvision", "MODEL.DEVICE", "cpu",
    "TEST.DETECTIONS_PER_IMAGE", "5", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "256",
]  # fmt: skip
# quality control without the skeleton check (a random model finds none), where it exists
QC_OPTS = ["BSI.QC.ENABLED", "True", "BSI.QC.REQUIRED_REGIONS", "()"]
AREA_OPTS = ["BSI.QC.MIN_SKELETON_FRACTION", "0.0", "BSI.QC.MAX_SKELETON_FRACTION", "1.0"]


def load_corpus():
    spec = importlib.util.spec_from_file_location("bad_input_corpus_cases", CORPUS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    import torch

    import bsi_d2

    corpus = load_corpus()
    torch.manual_seed(0)
    package = Path(bsi_d2.__file__).parent  # plain file inspection: any checkout
    config_text = "".join(
        p.read_text() for p in [*package.glob("config.py"), *package.glob("config/*.py")]
    )
    has_qc = "BSI.QC.REQUIRED_REGIONS" in config_text
    has_area = "MIN_SKELETON_FRACTION" in config_text
    runner = corpus.cli_runner(
        PREDICT_ARGV + (QC_OPTS if has_qc else []) + (AREA_OPTS if has_area else [])
    )
    print(f"quality control: {'on (no skeleton check)' if has_qc else 'absent in this checkout'}")
    cases = [c for c in corpus.CASES if args.only in c.name]
    print(f"bsi_d2 from {Path(bsi_d2.__file__).resolve().parent}; {len(cases)} cases")
    rows, counts = [], Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bad_corpus_") as tmp:
        tmp = Path(tmp)
        sources = corpus.make_sources(tmp / "phantoms")
        for i, case in enumerate(cases):
            try:
                _, results = corpus.run_case(case, sources, tmp / f"case{i:03d}", runner)
                worst = max((v for _, v in results), key=lambda v: corpus.SEVERITY[v.outcome])
                per_command = " ".join(f"{r.command}={v.outcome}" for r, v in results)
                outcome, detail = worst.outcome, f"{per_command}: {worst.detail}"
            except Exception as err:  # noqa: BLE001 - a case that cannot even be built
                outcome, detail = "aborted", f"harness: {type(err).__name__}: {err}"
            counts[outcome] += 1
            rows.append((case.kind, case.name, outcome, detail))
    logging.getLogger().handlers.clear()
    width = max(len(r[1]) for r in rows)
    print(f"\n{'kind':<8} {'case':<{width}} {'outcome':<10} detail")
    for kind, name, outcome, detail in rows:
        print(f"{kind:<8} {name:<{width}} {outcome:<10} {detail.replace(chr(10), ' ')[:150]}")
    print("\ncounts: " + ", ".join(f"{o} {counts[o]}" for o in corpus.OUTCOMES))
    print(f"{len(rows)} cases in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
