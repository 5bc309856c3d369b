"""``bsi-d2 predict``: batch inference, per-region BSI and reports for folders of scans."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from typing import TYPE_CHECKING

from bsi_d2.commands._args import (
    add_config_file_argument,
    add_cut_below_knee_argument,
    add_keep_dates_argument,
    add_opts_argument,
    add_out_argument,
    add_progress_argument,
    add_recursive_argument,
    add_salt_argument,
    add_score_threshold_arguments,
)
from bsi_d2.io.limits import add_limit_arguments, limits_from
from bsi_d2.postprocess.bsi import COMBINE_RULES
from bsi_d2.postprocess.qc import QCThresholds
from bsi_d2.postprocess.rasterize import parse_class_thresholds

if TYPE_CHECKING:
    from bsi_d2.inference.batch import BatchOptions

HELP = "batch inference, BSI per scan and reports"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="DICOM, PNG/TIFF or Labelme JSON files/folders")
    add_config_file_argument(
        parser, "model config YAML (the one it was trained with)", deprecated=["--config"]
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="model weights: shorthand for --opts MODEL.WEIGHTS FILE (default: the config's)",
    )
    add_out_argument(parser, "output folder (a rerun resumes it)")
    parser.add_argument("--batch-size", type=int, default=4, help="scans per forward pass")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="N > 1: one worker process per GPU, each a shard"
    )
    parser.add_argument(
        "--shard", default="0/1", help="i/n: process only shard i (0-based) of n, by content key"
    )
    add_score_threshold_arguments(parser)
    parser.add_argument(
        "--combine",
        choices=COMBINE_RULES,
        help="how per-view involvement is combined: mean (the seeds'), max, union (each lesion "
        "once, from its larger view), anterior, posterior (default BSI.COMBINE_VIEWS)",
    )
    parser.add_argument(
        "--match-views",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="match lesions across views so one seen in both counts once (default "
        "BSI.MATCH_VIEWS, on); --no-match-views counts each view's lesions apart",
    )
    parser.add_argument(
        "--match-radius", type=float, help="matching radius in pixels (default BSI.MATCH_RADIUS)"
    )
    add_cut_below_knee_argument(parser)
    add_recursive_argument(parser)
    add_record_arguments(parser)
    add_output_arguments(parser)
    add_opts_argument(parser)


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of what a batch writes, shared by ``predict`` and ``bsi``: every record
    carries the scan's ``study_key`` and ``patient_key`` (salted), the study date only as
    ``--keep-dates`` (or ``--keep-identity``) keeps it."""
    add_limit_arguments(parser)
    add_salt_argument(parser)
    parser.add_argument(
        "--keep-identity",
        action="store_true",
        help="name input files by their paths in bsi.json, errors and the log (folder and file "
        "names may identify the patient; by default: salted pseudonyms and a content digest), "
        "and keep the exact study date unless --keep-dates says otherwise",
    )
    add_keep_dates_argument(parser)
    add_progress_argument(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any input is rejected, fails, or fails quality control",
    )
    parser.add_argument(
        "--dicom-out",
        action="store_true",
        help="also write each scan's DICOM objects into <scan>/dicom/: a TID 1500 SR of the "
        "BSI, a SEG per view in the source's geometry (DICOM inputs) and a Secondary Capture "
        "of the overlay; pseudonymised unless --keep-identity (pip install bsi_d2[dicom])",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Which files a batch writes, and how many threads write them beside the model."""
    from bsi_d2.inference.outputs import OUTPUT_FILES

    parser.add_argument(
        "--outputs",
        default="all",
        metavar="LIST",
        help="comma-separated outputs to write, from "
        + ", ".join(f"{k} ({v})" for k, v in OUTPUT_FILES.items())
        + "; bsi is always written (it marks a scan done). Default all; e.g. bsi,csv for "
        "archive runs",
    )
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="also save every prediction of the model to FILE (JSON lines), for --replay",
    )
    parser.add_argument(
        "--replay",
        metavar="FILE",
        help="answer from a recording (--record, or benchmarks/bench_pipeline.py) instead of a "
        "model: times and tests the pipeline without one; the config is optional",
    )
    parser.add_argument(
        "--writers",
        type=int,
        default=2,
        metavar="N",
        help="threads analysing and writing scans while the model runs (0: one scan at a time)",
    )


def worker_argv(args: argparse.Namespace, shard: str, device: str) -> list[str]:
    """The command line of one worker of ``--num-gpus``: this one, on a shard and a device."""
    argv = [sys.executable, "-m", "bsi_d2.cli", "predict", *map(str, args.inputs)]
    argv += ["--out", str(args.out), "--batch-size", str(args.batch_size)]
    argv += ["--shard", shard, "--device", device]
    argv += ["--outputs", args.outputs, "--writers", str(args.writers)]
    for flag, value in (
        ("--config-file", args.config_file or None),
        ("--weights", args.weights),
        ("--replay", args.replay),
        ("--score-thresh", args.score_thresh),
        ("--combine", args.combine),
        ("--salt", args.salt),
        ("--keep-dates", args.keep_dates),
        ("--match-radius", args.match_radius),
        ("--max-file-mb", args.max_file_mb),
        ("--max-frame-pixels", args.max_frame_pixels),
        ("--max-frames", args.max_frames),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for item in args.class_thresh:
        argv += ["--class-thresh", item]
    if args.match_views is not None:
        argv.append("--match-views" if args.match_views else "--no-match-views")
    for flag, on in (
        ("--cut-below-knee", args.cut_below_knee),
        ("--no-recursive", not args.recursive),
        ("--keep-identity", args.keep_identity),
        ("--dicom-out", args.dicom_out),
        ("--no-progress", not args.progress),
        ("--strict", args.strict),
    ):
        if on:
            argv.append(flag)
    if args.opts:
        argv += ["--opts", *args.opts]
    return argv


def _spawn_workers(args: argparse.Namespace) -> int:
    import torch

    from bsi_d2.inference.batch import finalize_outputs, parse_shard
    from bsi_d2.inference.outputs import parse_outputs

    index, count = parse_shard(args.shard)
    n = args.num_gpus
    if torch.cuda.device_count() < n:
        logger.error("--num-gpus %d but %d CUDA device(s) visible", n, torch.cuda.device_count())
        return 2
    # Worker j takes global shard j*count + index of n*count: its keys are all in shard index/count.
    procs = [
        subprocess.Popen(worker_argv(args, f"{j * count + index}/{n * count}", f"cuda:{j}"))
        for j in range(n)
    ]
    codes = [p.wait() for p in procs]
    finalize_outputs(args.out, outputs=parse_outputs(args.outputs))
    failed = [j for j, c in enumerate(codes) if c != 0]
    if failed:
        logger.error("workers %s exited with errors", failed)
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    from bsi_d2.inference.batch import parse_shard, run_batch
    from bsi_d2.inference.outputs import parse_outputs
    from bsi_d2.io.files import OutputDirError, check_output_dir

    shard = parse_shard(args.shard)
    try:
        outputs = parse_outputs(args.outputs)
    except ValueError as err:
        logger.error("--outputs: %s", err)
        return 2
    try:
        check_output_dir(args.out)  # before the model loads: a bad folder fails in a second
    except OutputDirError as err:
        logger.error("%s", err)
        return 2
    if args.num_gpus > 1:
        return _spawn_workers(args)
    _, predictor, options = model_and_options(
        args,
        batch_size=args.batch_size,
        cut_below_knee=args.cut_below_knee,
        shard=shard,
        recursive=args.recursive,
        keep_dates=args.keep_dates,
        progress=args.progress,
        outputs=outputs,
        dicom_out=args.dicom_out,
        writers=max(0, args.writers),
    )
    result = run_batch(args.inputs, args.out, predictor, predictor.taxonomy, options)
    if args.record:
        predictor.save(args.record)
        logger.info("predictions of %d scans recorded in %s", len(predictor.entries), args.record)
    logger.info("%s; outputs in %s", result.summary(), args.out)
    return batch_exit_code(result, args.strict)


def options_from_config(cfg, args: argparse.Namespace, engine: str, **fields) -> BatchOptions:
    """Batch options from the config's ``BSI`` node, overridden by the command line where an
    option was given (``--score-thresh``, ``--class-thresh``, ``--combine``, ``--match-views``,
    ``--match-radius``, the read limits; an option a command does not have counts as not
    given), plus ``fields`` as they are. ``predict`` and ``serve`` share it."""
    from bsi_d2.inference.batch import BatchOptions

    def given(name: str):
        return getattr(args, name, None)

    bsi_cfg, read = cfg.BSI, cfg.BSI.READ
    class_thresh = parse_class_thresholds(list(bsi_cfg.CLASS_SCORE_THRESH))
    class_thresh.update(parse_class_thresholds(given("class_thresh") or []))
    options = BatchOptions(
        score_thresh=float(
            bsi_cfg.SCORE_THRESH if given("score_thresh") is None else args.score_thresh
        ),  # fmt: skip
        class_thresh=class_thresh,
        combine=given("combine") or str(bsi_cfg.COMBINE_VIEWS),
        match_views=bool(
            bsi_cfg.MATCH_VIEWS if given("match_views") is None else args.match_views
        ),  # fmt: skip
        match_radius=float(
            bsi_cfg.MATCH_RADIUS if given("match_radius") is None else args.match_radius
        ),  # fmt: skip
        salt=args.salt,
        keep_identity=bool(given("keep_identity")),
        model={
            "config": given("config_file") or None,
            "weights": given("weights") or (str(cfg.MODEL.WEIGHTS) or None),
            "engine": engine,
        },
        **fields,
    )
    options.qc = QCThresholds.from_config(bsi_cfg.QC)
    options.limits = limits_from(
        limits_from(None, read.MAX_FILE_MB, read.MAX_FRAME_PIXELS, read.MAX_FRAMES),
        given("max_file_mb"),
        given("max_frame_pixels"),
        given("max_frames"),
    )
    return options


def model_and_options(args: argparse.Namespace, **fields):
    """What a command that predicts into ``args.out`` starts with: the output folder checked
    first (a bad folder fails in a second, before the model loads; OutputDirError), then the
    config, the model (:func:`load_predictor`, batched by ``--batch-size``) and the batch options
    (:func:`options_from_config` with ``fields``). Returns (cfg, predictor, options)."""
    from bsi_d2.config import setup_cfg
    from bsi_d2.io.files import check_output_dir

    check_output_dir(args.out)
    cfg = setup_cfg(args.config_file or None, args.opts)
    predictor, engine = load_predictor(args, cfg)
    predictor.batch_size = max(1, int(getattr(args, "batch_size", 1) or 1))
    return cfg, predictor, options_from_config(cfg, args, engine, **fields)


def load_predictor(args: argparse.Namespace, cfg):
    """The model (wrapped to record it with ``--record``), or a recording with ``--replay``;
    and the engine name the records give. An option a command does not have (``--record``,
    ``--replay``, ``--weights``, ``--device``) counts as not given."""
    from bsi_d2.inference import replay

    replay_file, record = getattr(args, "replay", None), getattr(args, "record", None)
    if replay_file:
        from bsi_d2.config import cfg_get
        from bsi_d2.taxonomy import load_taxonomy

        taxonomy = load_taxonomy(cfg_get(cfg, "BSI.TAXONOMY", None) or None)
        return replay.ReplayPredictor.from_file(replay_file, taxonomy), replay.REPLAY_ENGINE
    from bsi_d2.engine.predictor import build_predictor

    predictor = build_predictor(
        cfg, weights=getattr(args, "weights", None), device=getattr(args, "device", None)
    )
    engine = predictor.engine.name
    return (replay.RecordingPredictor(predictor) if record else predictor), engine


def batch_exit_code(result, strict: bool) -> int:
    """0 when scans were done (or already done); 1 when none was, or, with ``strict``, when any
    input was rejected or any scan failed or failed quality control."""
    if not (result.done or result.skipped):
        logger.error("no scan was processed; see errors.jsonl in the output folder")
        return 1
    if strict and (result.errors or result.failed or result.qc_failed):
        logger.error("--strict: %d input(s) rejected or failed, %d failed quality control",
                     len(result.errors), len(result.qc_failed))  # fmt: skip
        return 1
    return 0
