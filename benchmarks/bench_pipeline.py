"""Cost per scan of ``bsi-d2 predict`` outside the model, stage by stage, with a replay predictor.

Run by hand::

    python benchmarks/bench_pipeline.py [--scans 24] [--repeat 3] [--phantoms DIR]
        [--config-file C --weights W [--record FILE]] [--replay FILE] [--outputs LIST]

The replay predictor returns recorded predictions instantly (:mod:`bsi_d2.inference.replay`), so
what remains is the pipeline's own work: reading, preprocessing, post-processing and each output
writer. Without a model the recording is built from the phantoms' truth; with ``--config-file``
and ``--weights`` the real model's outputs are recorded once (to ``--record FILE`` if given,
replayed later with ``--replay FILE``) and the model is timed end to end as well.

Printed, each against a baseline measured in the same run: the per-stage table (each stage alone,
one scan at a time, median ms/scan over scans and repeats); the whole pipeline one scan at a time
(batch 1, no read-ahead: the baseline) and batched (the defaults); the model alone where there is
one. The last line is ``pipeline: model X ms/scan, other Y ms/scan, end to end Z scans/s``:
``other`` is end-to-end time per scan less the model's. Targets: other <= 10 ms/scan on 2 cores;
batched / one at a time >= 1.3x with the real model.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_phantoms(folder: Path, n: int) -> Path:
    from bsi_d2.phantom import write_phantoms

    written = write_phantoms(folder, n, seed=0, workers=2)
    if len(written) != n:
        raise RuntimeError(f"only {len(written)} of {n} phantoms were written")
    return folder


def stage_table(runner, dicoms: list[Path], predictor, repeat: int) -> dict[str, float]:
    """Median ms/scan of each stage alone, in the order ``BatchRunner`` runs them."""
    from bsi_d2.inference.batch import _Prepared, key_of_digests
    from bsi_d2.io.pseudonym import file_digest
    from bsi_d2.io.readers import read_scan_file
    from bsi_d2.preprocess.pipeline import preprocess_scan

    times: dict[str, list[float]] = defaultdict(list)

    def timed(name, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        times[name].append((time.perf_counter() - start) * 1e3)
        return value

    for _ in range(repeat):
        for path in dicoms:
            (scan,) = timed("read", read_scan_file, path)
            digest = timed("content key", lambda p: key_of_digests([file_digest(p)]), path)
            prepared = timed("preprocess", preprocess_scan, scan)
            (instances,) = timed("replay predictor", predictor, [prepared.display])
            item = _Prepared(digest, [str(path)], ["sha256:0"], prepared.counts, prepared.display)
            for name, ms in runner_stage_times(runner, item, instances).items():
                times[name].append(ms)
    return {name: statistics.median(values) for name, values in times.items()}


def runner_stage_times(runner, scan, instances) -> dict[str, float]:
    """ms of each step of ``BatchRunner.write_scan`` for one scan, the writers those of
    :data:`bsi_d2.inference.outputs.SCAN_WRITERS`."""
    from bsi_d2.inference import outputs as out
    from bsi_d2.postprocess.analysis import analyse_scan
    from bsi_d2.postprocess.qc import quality_control
    from bsi_d2.postprocess.rasterize import passes_thresholds
    from bsi_d2.report.html import write_scan_report

    opts, tax = runner.options, runner.taxonomy
    scan_dir = runner.out_dir / "scans" / scan.key
    ms: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        ms[name] = (now - t) * 1e3
        t = now

    out.reset_scan_dir(scan_dir)
    analysis = analyse_scan(instances, scan.counts, tax, score_thresh=opts.score_thresh,
                            match_views=opts.match_views)  # fmt: skip
    kept = passes_thresholds(instances.category_ids, instances.scores, tax, opts.score_thresh)
    lap("post-process (analyse)")
    files = out.ScanFiles(scan_dir, scan.key, scan.display, instances, kept, analysis, tax)
    for name, writer in out.SCAN_WRITERS.items():
        writer(files)
        lap(f"write {STAGE_NAMES[name]}")
    qc = quality_control(scan.counts, analysis.bsi, ["anterior", "posterior"], "counts", False,
                         opts.qc)  # fmt: skip
    record = out.scan_record(scan.key, scan.source, opts.model, analysis=analysis.record,
                             qc=qc.to_dict())  # fmt: skip
    lap("quality control")
    write_scan_report(scan_dir, record, tax)
    lap("write report.html")
    out.atomic_write_json(scan_dir / out.RECORD_FILE, record)
    lap("write bsi.json")
    return ms


STAGE_NAMES = {
    "predictions": "predictions.json",
    "labelmap": "labelmap.png",
    "overlay": "overlay.png",
    "labelme": "Labelme (png + json)",
}


def process_transfer_ms(scan, instances, repeat: int) -> float:
    """What a process pool would add per scan before any work: pickling what ``write_scan``
    reads (display, counts, every mask) and unpickling it on the other side."""
    import pickle

    start = time.perf_counter()
    for _ in range(repeat):
        pickle.loads(pickle.dumps((scan, instances), protocol=pickle.HIGHEST_PROTOCOL))
    return (time.perf_counter() - start) / repeat * 1e3


def run_pipeline(inputs: Path, out_dir: Path, predictor, taxonomy, batch: int, prefetch: int,
                 **extra) -> tuple[float, int]:  # fmt: skip
    from bsi_d2.inference.batch import BatchOptions, run_batch

    predictor.batch_size = batch
    options = BatchOptions(batch_size=batch, prefetch=prefetch, progress=False, **extra)
    start = time.perf_counter()
    result = run_batch([inputs], out_dir, predictor, taxonomy, options)
    return time.perf_counter() - start, len(result.done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3, help="repeats; medians are printed")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--writers", type=int, default=2, help="writer threads of the batched run")
    parser.add_argument("--phantoms", type=Path, help="bsi-d2 phantom output to use")
    parser.add_argument("--config-file", help="model config; with --weights: the real model")
    parser.add_argument("--weights")
    parser.add_argument("--record", type=Path, help="save the real model's outputs here")
    parser.add_argument("--replay", type=Path, help="replay this recording instead")
    args = parser.parse_args()

    import torch

    from bsi_d2.inference.replay import (
        RecordingPredictor,
        ReplayPredictor,
        load_recording,
        phantom_recording,
    )
    from bsi_d2.taxonomy import load_taxonomy

    torch.set_num_threads(min(2, torch.get_num_threads()))
    taxonomy = load_taxonomy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        phantoms = args.phantoms or make_phantoms(tmp / "phantoms", args.scans)
        dicoms = sorted((phantoms / "dicom").glob("*.dcm"))[: args.scans]
        inputs = tmp / "in"
        inputs.mkdir()
        for path in dicoms:
            (inputs / path.name).symlink_to(path.resolve())
        model = None
        if args.config_file and args.weights:
            from bsi_d2.config import setup_cfg
            from bsi_d2.engine.predictor import build_predictor

            model = build_predictor(setup_cfg(args.config_file, []), weights=args.weights,
                                    device="cpu")  # fmt: skip
        if args.replay:
            entries = load_recording(args.replay)
        elif model is not None:
            recorder = RecordingPredictor(model)
            run_pipeline(inputs, tmp / "record", recorder, taxonomy, args.batch_size, 8)
            if args.record:
                recorder.save(args.record)
            entries = recorder.entries
        else:
            entries = {e["display"]: e for e in phantom_recording(phantoms, taxonomy)}
        replay = ReplayPredictor(entries, taxonomy)
        n = len(dicoms)
        source = "the model" if model else "phantom truth"
        print(f"{n} phantom DICOM scans, torch threads {torch.get_num_threads()}, "
              f"predictions from {source} (replayed)")  # fmt: skip

        from bsi_d2.inference.batch import BatchRunner

        runner = BatchRunner(replay, taxonomy, tmp / "stages")
        stages = stage_table(runner, dicoms, replay, args.repeat)
        total = sum(v for k, v in stages.items() if k != "replay predictor")
        print(f"\nper stage, each alone, one scan at a time (median of {args.repeat} x {n}):")
        for name, ms in stages.items():
            print(f"  {name:<28s} {ms:7.2f} ms/scan")
        print(f"  {'sum (without the replay)':<28s} {total:7.2f} ms/scan")

        from bsi_d2.inference.batch import _Prepared
        from bsi_d2.io.readers import read_scan_file
        from bsi_d2.preprocess.pipeline import preprocess_scan

        prepared = preprocess_scan(read_scan_file(dicoms[0])[0])
        scan = _Prepared("k", [], [], prepared.counts, prepared.display)
        transfer = process_transfer_ms(scan, replay([prepared.display])[0], 5)
        print(f"  a process pool would first pickle each scan's inputs: {transfer:.2f} ms/scan "
              "(a thread pool: 0)")  # fmt: skip

        variants = {  # name: (batch, read-ahead, writer threads); the first is the baseline
            "one at a time (baseline)": (1, 0, 0),
            "batched + read-ahead": (args.batch_size, 8, 0),
            f"batched + {args.writers} writer threads": (args.batch_size, 8, args.writers),
        }
        times: dict[str, list[float]] = defaultdict(list)
        for r in range(args.repeat):  # interleaved, so a busy neighbour hurts all sides alike
            for v, (batch, ahead, writers) in enumerate(variants.values()):
                t, done = run_pipeline(inputs, tmp / f"v{v}r{r}", replay, taxonomy, batch, ahead,
                                       writers=writers)  # fmt: skip
                assert done == n, (done, n)
                times[v].append(t / n * 1e3)
        replay_ms = stages["replay predictor"]
        print(f"\nwhole pipeline, replay predictor (median of {args.repeat}):")
        medians = [statistics.median(times[v]) for v in range(len(variants))]
        for name, ms in zip(variants, medians, strict=True):
            print(f"  {name:<32s} {ms:7.2f} ms/scan  {1e3 / ms:6.1f} scans/s  "
                  f"({medians[0] / ms:.2f}x)")  # fmt: skip
        bat_ms = medians[-1]
        model_ms, end_ms = replay_ms, bat_ms
        if model is not None:
            images = [np.asarray(replay_display) for replay_display in _displays(dicoms)]
            model.batch_size = args.batch_size
            model(images[: args.batch_size])  # warm-up
            m_times, one_e, bat_e = [], [], []
            for r in range(args.repeat):
                start = time.perf_counter()
                model(images)
                m_times.append((time.perf_counter() - start) / n)
                t, _ = run_pipeline(inputs, tmp / f"mone{r}", model, taxonomy, 1, 0, writers=0)
                one_e.append(t / n)
                t, _ = run_pipeline(inputs, tmp / f"mbat{r}", model, taxonomy, args.batch_size, 8,
                                    writers=args.writers)  # fmt: skip
                bat_e.append(t / n)
            model_ms = statistics.median(m_times) * 1e3
            one_e_ms, end_ms = statistics.median(one_e) * 1e3, statistics.median(bat_e) * 1e3
            print(f"\nreal model (median of {args.repeat}):")
            print(f"  model alone, batch {args.batch_size}         {model_ms:7.2f} ms/scan")
            print(f"  one at a time (baseline)   {one_e_ms:7.2f} ms/scan  "
                  f"{1e3 / one_e_ms:6.2f} scans/s")  # fmt: skip
            print(f"  batched + read-ahead       {end_ms:7.2f} ms/scan  {1e3 / end_ms:6.2f} "
                  f"scans/s  ({one_e_ms / end_ms:.2f}x, target >= 1.3x)")  # fmt: skip
        other = end_ms - model_ms
        print(f"pipeline: model {model_ms:.1f} ms/scan, other {other:.1f} ms/scan, "
              f"end to end {1e3 / end_ms:.1f} scans/s")  # fmt: skip


def _displays(dicoms: list[Path]) -> list[np.ndarray]:
    from bsi_d2.io.readers import read_scan_file
    from bsi_d2.preprocess.pipeline import preprocess_scan

    return [preprocess_scan(read_scan_file(p)[0]).display for p in dicoms]


if __name__ == "__main__":
    main()
