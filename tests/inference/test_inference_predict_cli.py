"""``bsi-d2 predict`` as a user runs it: killed mid-run in a subprocess, then rerun, it must give
the outputs of an uninterrupted run; plus the pieces of its command line."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers.paths import CPU_CONFIG
from PIL import Image

from bsi_d2 import cli
from bsi_d2.commands import predict
from bsi_d2.io.pseudonym import input_label

# a random model finds no skeleton: quality control off, so the records keep their content
OPTS = ["--opts", "MODEL.ENGINE", "torchvision", "TEST.DETECTIONS_PER_IMAGE", "10",
        "BSI.QC.ENABLED", "False"]  # fmt: skip


def _scan(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:950, 0:512]
    body = ((yy - 475) / 400.0) ** 2 + ((xx % 256 - 128) / 80.0) ** 2 <= 1
    return rng.poisson(3.0 + 50.0 * body).astype(np.uint16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.checkpoint import save_checkpoint
    from bsi_d2.engine.predictor import build_predictor

    root = tmp_path_factory.mktemp("cli")
    inputs = root / "in"
    inputs.mkdir()
    for i in range(2):
        Image.fromarray(_scan(i)).save(inputs / f"scan{i}.png")
    (inputs / "empty.png").write_bytes(b"")
    torch.manual_seed(0)
    model = build_predictor(setup_cfg(str(CPU_CONFIG), OPTS[1:]), device="cpu").model
    weights = save_checkpoint(root, "tiny.pth", model)
    return root, inputs, weights


def _argv(inputs, out, weights):
    return [
        "predict", str(inputs), "--config-file", str(CPU_CONFIG), "--weights", str(weights),
        "--out", str(out), "--batch-size", "1", "--score-thresh", "0.05", "--no-progress",
        "--match-views", *OPTS,
    ]  # fmt: skip


def _records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "scans").glob("*/bsi.json")}


def test_killed_run_resumes_to_the_uninterrupted_result(setup):
    root, inputs, weights = setup
    reference = root / "reference"
    assert cli.main(_argv(inputs, reference, weights)) == 0
    expected = _records(reference)
    assert len(expected) == 2 and all(r["status"] == "ok" for r in expected.values())
    assert all(r["model"]["weights"] == str(weights) for r in expected.values())
    assert all(r["model"]["engine"] == "torchvision" for r in expected.values())

    out = root / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsi_d2.cli", *_argv(inputs, out, weights)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not list((out / "scans").glob("*/bsi.json")) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        proc.wait()
    markers = sorted((out / "scans").glob("*/bsi.json"), key=lambda p: p.stat().st_mtime_ns)
    assert markers, "the first run finished no scan before it was killed"
    for late in markers[1:]:  # a kill delayed by a busy machine: undo what it let finish
        late.unlink()
    marker = markers[0]
    stamp = marker.stat().st_mtime_ns

    assert cli.main(_argv(inputs, out, weights)) == 0
    assert _records(out) == expected
    assert marker.stat().st_mtime_ns == stamp  # finished scans are skipped, not redone
    errors = (out / "errors.jsonl").read_text().splitlines()
    assert [json.loads(e)["path"] for e in errors] == [input_label(inputs / "empty.png", [inputs])]
    assert (out / "bsi_summary.csv").read_text() == (reference / "bsi_summary.csv").read_text()


def _parser():
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    return parser


def test_worker_command_line_keeps_every_option():
    args = _parser().parse_args(
        ["in1", "in2", "--out", "o", "--config-file", "c.yaml", "--weights", "w.pth", "--num-gpus",
         "2", "--class-thresh", "lesion=0.3", "--match-views", "--keep-identity", "--combine",
         "max", "--salt", "s", "--opts", "MODEL.DEVICE", "cuda"]
    )  # fmt: skip
    argv = predict.worker_argv(args, "1/2", "cuda:1")
    assert argv[:4] == [sys.executable, "-m", "bsi_d2.cli", "predict"]
    again = _parser().parse_args(argv[4:])
    assert again.inputs == ["in1", "in2"] and again.shard == "1/2" and again.device == "cuda:1"
    assert again.num_gpus == 1 and again.class_thresh == ["lesion=0.3"]
    assert (
        again.match_views and again.keep_identity and again.combine == "max" and again.salt == "s"
    )
    assert again.config_file == "c.yaml" and again.weights == "w.pth"
    assert again.opts == ["MODEL.DEVICE", "cuda"]
    off = _parser().parse_args(["in", "--out", "o", "--no-match-views", "--match-radius", "9"])
    again = _parser().parse_args(predict.worker_argv(off, "0/2", "cpu")[4:])
    assert again.match_views is False and again.match_radius == 9.0
    assert _parser().parse_args(["in", "--out", "o"]).match_views is None  # config decides
    limited = _parser().parse_args(["in", "--out", "o", "--max-file-mb", "8", "--max-frames", "2"])
    again = _parser().parse_args(predict.worker_argv(limited, "0/2", "cpu")[4:])
    assert again.max_file_mb == 8.0 and again.max_frames == 2


def test_class_thresholds_from_flags_and_config():
    assert predict.parse_class_thresholds(["lesion=0.3", "kidney = 0.9"]) == {
        "lesion": 0.3,
        "kidney": 0.9,
    }
    assert predict.parse_class_thresholds([["lesion", 0.2]]) == {"lesion": 0.2}
    with pytest.raises(ValueError, match="CLASS=VALUE"):
        predict.parse_class_thresholds(["lesion"])
    with pytest.raises(ValueError, match="not a number"):
        predict.parse_class_thresholds(["lesion=high"])


SHARDS = [("0/1", True), ("3/4", True), ("4/4", False), ("-1/2", False), ("1", False),
          ("a/b", False)]  # fmt: skip


@pytest.mark.parametrize(("text", "ok"), SHARDS)
def test_shard_syntax(text, ok):
    from bsi_d2.inference.batch import parse_shard

    if ok:
        assert parse_shard(text)[1] >= 1
    else:
        with pytest.raises(ValueError, match="shard"):
            parse_shard(text)
