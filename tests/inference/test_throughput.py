"""Archive-scale batch inference (issue #19), scaled down: the replay predictor, writer threads,
``--outputs``, a kill and its rerun, shards, and the paged index; plus the faster writers giving
the bytes the plain ones give. Real DICOM phantoms, real PNGs; no timing is asserted."""

from __future__ import annotations

import csv
import filecmp
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bsi_d2 import cli
from bsi_d2.inference import outputs as out
from bsi_d2.inference.batch import BatchOptions, run_batch
from bsi_d2.inference.replay import (
    ReplayPredictor,
    distinct_copy,
    entry_instances,
    load_recording,
    phantom_recording,
    save_recording,
)
from bsi_d2.report.html import index_html, write_index_pages
from bsi_d2.report.overlay import render_overlay
from bsi_d2.structures.masks import mask_to_polygons, mask_to_rle

BASE, COPIES = 6, 10  # 60 scans


@pytest.fixture(scope="module")
def archive(tmp_path_factory, taxonomy):
    """6 phantoms, their truth as a recording, and 60 distinct DICOM copies in 3 folders."""
    from bsi_d2.phantom import write_phantoms

    root = tmp_path_factory.mktemp("archive")
    write_phantoms(root / "phantoms", BASE, seed=0, workers=1)
    recording = save_recording(root / "rec.jsonl", phantom_recording(root / "phantoms", taxonomy))
    sources = sorted((root / "phantoms" / "dicom").glob("*.dcm"))
    inputs = root / "in"
    for n in range(BASE * COPIES):
        copy, source = divmod(n, BASE)
        target = inputs / f"part{n % 3}" / f"scan{n:04d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(distinct_copy(sources[source].read_bytes(), copy, source))
    return root, inputs, recording


def _argv(inputs, recording, out_dir, *extra):
    return ["predict", str(inputs), "--replay", str(recording), "--out", str(out_dir),
            "--no-progress", *extra]  # fmt: skip


def _differences(a: Path, b: Path) -> list[str]:
    differ: list[str] = []

    def walk(cmp, prefix):
        differ.extend(prefix + n for n in cmp.left_only + cmp.right_only)
        differ.extend(prefix + n for n in cmp.diff_files + cmp.funny_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b, ignore=["errors"]), "")
    return differ


@pytest.fixture(scope="module")
def reference(archive):
    """One uninterrupted archive run (bsi, csv, index) of the 60 scans."""
    root, inputs, recording = archive
    ref = root / "reference"
    assert cli.main(_argv(inputs, recording, ref, "--outputs", "bsi,csv,index")) == 0
    return ref


# -- the replay predictor --------------------------------------------------------------------


def test_recording_replays_the_phantom_truth_as_scored_instances(archive, taxonomy):
    root, _, recording = archive
    entries = load_recording(recording)
    assert len(entries) == BASE
    from bsi_d2.inference.annotations import labelme_file_instances
    from bsi_d2.io.readers import read_scan_file
    from bsi_d2.preprocess.pipeline import preprocess_scan

    dicom = sorted((root / "phantoms" / "dicom").glob("*.dcm"))[2]
    display = preprocess_scan(read_scan_file(dicom)[0]).display
    (replayed,) = ReplayPredictor(entries, taxonomy)([display])
    truth = labelme_file_instances(
        root / "phantoms" / "labelme" / f"{dicom.stem}.json", taxonomy, display.shape
    )
    assert len(replayed) == len(truth) > 10
    assert np.array_equal(replayed.masks, truth.masks)
    assert np.array_equal(replayed.category_ids, truth.category_ids)
    assert ((replayed.scores >= 0.6) & (replayed.scores < 1)).all()
    with pytest.raises(KeyError, match="not in the recording"):
        ReplayPredictor(entries, taxonomy)([np.zeros_like(display)])


def test_copies_are_distinct_scans_with_the_same_pixels(archive):
    import pydicom

    _, inputs, _ = archive
    first, copy = inputs / "part0" / "scan0000.dcm", inputs / "part0" / "scan0006.dcm"
    a, b = pydicom.dcmread(first), pydicom.dcmread(copy)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
    assert np.array_equal(a.pixel_array, b.pixel_array)


def test_an_unrecorded_scan_fails_alone_and_the_batch_goes_on(archive, taxonomy, tmp_path):
    root, _, recording = archive
    inputs = tmp_path / "in"
    inputs.mkdir()
    for dicom in sorted((root / "phantoms" / "dicom").glob("*.dcm"))[:3]:
        (inputs / dicom.name).write_bytes(dicom.read_bytes())
    entries = load_recording(recording)
    entries.pop(next(iter(entries)))  # one phantom's predictions are missing
    options = BatchOptions(progress=False, outputs=frozenset({"bsi", "csv"}))
    result = run_batch([inputs], tmp_path / "out", ReplayPredictor(entries, taxonomy), taxonomy,
                       options)  # fmt: skip
    assert len(result.done) + len(result.failed) == 3
    assert len(result.failed) <= 1  # the missing one, if it is among the first 3
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / out.SUMMARY_FILE).read_text())))
    assert len(rows) == 3


# -- writers: faster, same bytes -------------------------------------------------------------


def test_overlay_lookup_gives_the_float_blend(taxonomy):
    rng = np.random.default_rng(0)
    display = rng.integers(0, 256, (95, 64)).astype(np.uint8)
    region = rng.integers(0, 40, (95, 64)).astype(np.uint8)  # ids beyond the taxonomy too
    lesion = rng.random((95, 64)) < 0.05
    fast = render_overlay(display, region, lesion, taxonomy)
    plain = render_overlay(display.astype(np.float32), region, lesion, taxonomy)
    assert fast.dtype == np.uint8 and np.array_equal(fast, plain)


def test_batched_rles_and_cropped_polygons_match_the_plain_ones(archive, taxonomy):
    _, _, recording = archive
    entry = next(iter(load_recording(recording).values()))
    instances = entry_instances(entry)
    assert out.masks_to_rles(instances.masks) == [mask_to_rle(m) for m in instances.masks]
    # runs counted over the touched columns only: masks at every edge, full, empty, one column
    corners = np.zeros((7, 9, 6), bool)
    corners[1] = True
    corners[2, 0, 0] = corners[3, -1, -1] = corners[4, -1, 0] = corners[5, 0, -1] = True
    corners[6, :, 2] = True
    corners[0, 3:, 1:3] = True
    assert out.masks_to_rles(corners) == [mask_to_rle(m) for m in corners]
    assert out.masks_to_rles(np.zeros((1, 4, 3), bool)) == [mask_to_rle(np.zeros((4, 3), bool))]
    edge = np.zeros((30, 20), bool)
    edge[0:5, 15:20] = True  # touching the image's corner
    cases = [(m, b) for m, b in zip(instances.masks, instances.boxes, strict=True)]
    cases += [(edge, np.array([15, 0, 20, 5.0])), (edge, np.array([16, 1, 18, 3.0]))]  # short box
    for mask, box in cases:
        assert out._mask_polygons(mask, box) == mask_to_polygons(mask)


def test_writer_threads_write_what_one_scan_at_a_time_writes(archive, taxonomy, tmp_path):
    root, _, recording = archive
    inputs = tmp_path / "in"
    inputs.mkdir()
    for dicom in sorted((root / "phantoms" / "dicom").glob("*.dcm")):
        (inputs / dicom.name).write_bytes(dicom.read_bytes())
    replay = ReplayPredictor(load_recording(recording), taxonomy)
    for name, writers, batch in (("inline", 0, 1), ("threads", 2, 4)):
        options = BatchOptions(progress=False, writers=writers, batch_size=batch, prefetch=batch)
        result = run_batch([inputs], tmp_path / name, replay, taxonomy, options)
        assert len(result.done) == BASE
    assert _differences(tmp_path / "inline", tmp_path / "threads") == []
    scan = next((tmp_path / "threads" / "scans").iterdir())
    names = {p.name for p in scan.iterdir()}
    assert {"bsi.json", "predictions.json", "labelmap.png", "overlay.png", "report.html",
            f"{scan.name}.png", f"{scan.name}.json", f"{scan.name}.meta.json"} == names  # fmt: skip


def test_outputs_choose_the_files_and_bsi_json_is_always_written(archive, taxonomy, tmp_path):
    root, _, recording = archive
    dicom = sorted((root / "phantoms" / "dicom").glob("*.dcm"))[0]
    options = BatchOptions(progress=False, outputs=out.parse_outputs("csv,overlay"))
    replay = ReplayPredictor(load_recording(recording), taxonomy)
    run_batch([dicom], tmp_path / "o", replay, taxonomy, options)
    (scan,) = (tmp_path / "o" / "scans").iterdir()
    assert {p.name for p in scan.iterdir()} == {"bsi.json", "overlay.png"}
    assert json.loads((scan / "bsi.json").read_text())["overlay"] == "overlay.png"
    assert {p.name for p in (tmp_path / "o").iterdir()} == {
        "scans", "errors", "errors.jsonl", "bsi_summary.csv"}  # fmt: skip
    run_batch([dicom], tmp_path / "b", replay, taxonomy,
              BatchOptions(progress=False, outputs=out.parse_outputs("bsi")))  # fmt: skip
    (scan,) = (tmp_path / "b" / "scans").iterdir()
    assert json.loads((scan / "bsi.json").read_text())["overlay"] is None  # none was written
    assert out.parse_outputs("all") == out.ALL_OUTPUTS
    with pytest.raises(ValueError, match="unknown output"):
        out.parse_outputs("bsi,pdf")


def test_predict_refuses_an_unknown_output(archive, tmp_path):
    _, inputs, recording = archive
    assert cli.main(_argv(inputs, recording, tmp_path / "o", "--outputs", "bsi,html")) == 2
    assert not (tmp_path / "o").exists()


# -- the archive run: resume, shards, summary ------------------------------------------------


def test_archive_run_records_every_scan_once(reference):
    records = out.read_records(reference / "scans")
    assert len(records) == BASE * COPIES
    assert len({r["key"] for r in records}) == BASE * COPIES
    assert all(r["status"] in out.FINISHED_STATUSES for r in records)
    assert all(r["model"]["engine"] == "replay" for r in records)
    assert all(s.startswith("sha256:") for r in records for s in r["source"])  # no file names
    rows = list(csv.DictReader(io.StringIO((reference / out.SUMMARY_FILE).read_text())))
    assert [r["key"] for r in rows] == sorted(r["key"] for r in records)
    assert (reference / out.SUMMARY_FILE).read_text() == out.summary_csv(records)
    index = (reference / "index.html").read_text()
    assert index.count("report.html") == sum(r["status"] == "ok" for r in records)
    for path in reference.rglob("*"):  # nothing written names an input file
        if path.suffix in (".json", ".csv", ".html"):
            assert "scan0" not in path.read_text() and "part" not in path.read_text()


def test_killed_archive_run_resumes_to_the_uninterrupted_result(archive, reference, tmp_path):
    _, inputs, recording = archive
    killed = tmp_path / "killed"
    argv = _argv(inputs, recording, killed, "--outputs", "bsi,csv,index")
    proc = subprocess.Popen([sys.executable, "-m", "bsi_d2.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list((killed / "scans").glob("*/bsi.json"))) >= 5:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        proc.wait()
    before = {p.parent.name: p.stat().st_mtime_ns for p in (killed / "scans").glob("*/bsi.json")}
    assert 5 <= len(before) < BASE * COPIES, "the kill came after the run had finished"
    assert cli.main(argv) == 0
    assert _differences(reference, killed) == []
    after = {p.parent.name: p.stat().st_mtime_ns for p in (killed / "scans").glob("*/bsi.json")}
    assert all(after[k] == t for k, t in before.items())  # finished scans were not redone
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]


def test_two_shards_give_the_union_of_one_run(archive, reference, tmp_path):
    _, inputs, recording = archive
    sharded = tmp_path / "sharded"
    keys = []
    for shard in ("0/2", "1/2"):
        argv = _argv(inputs, recording, sharded, "--outputs", "bsi,csv,index", "--shard", shard)
        before = {p.name for p in (sharded / "scans").glob("*")} if sharded.exists() else set()
        assert cli.main(argv) == 0
        keys.append({p.name for p in (sharded / "scans").glob("*")} - before)
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert _differences(reference, sharded) == []


# -- the paged index -------------------------------------------------------------------------


def _record(key, status="ok", abnormal=False):
    return {"key": key, "status": status, "abnormal": abnormal, "bsi": 0.5 if abnormal else 0.0,
            "bstbi": 0.0, "lesion_count": 1 if abnormal else 0, "burden_group": None,
            "error": None if status == "ok" else "failed: reason", "report": f"{key}/report.html",
            "sites": [], "regions": [], "lesions": []}  # fmt: skip


def test_index_pages_hold_every_row_once_with_links_between_them(tmp_path):
    ok = [_record(f"c{i:02d}", abnormal=i % 2 == 0) for i in range(5)]
    failed = [_record("f00", "failed"), _record("f01", "qc_failed")]
    (tmp_path / "index-9.html").write_text("stale")
    pages = write_index_pages(tmp_path, iter(ok), iter(failed), (5, 3, 2), page_rows=3)
    assert [p.name for p in pages] == ["index.html", "index-2.html", "index-3.html"]
    assert not (tmp_path / "index-9.html").exists()
    texts = [p.read_text() for p in pages]
    for r in ok + failed:
        assert sum(t.count(f">{r['key']}<") for t in texts) == 1, r["key"]
    assert all("5 scan(s) analysed, 3 with abnormal uptake flagged, 2 failed" in t for t in texts)
    assert 'href="index-2.html"' in texts[0] and 'href="index-3.html"' in texts[0]  # next, last
    assert 'href="index.html"' in texts[1] and 'href="index-3.html"' in texts[1]
    assert "page 3 of 3" in texts[2] and "<script" not in "".join(texts)


def test_one_page_index_is_the_plain_index(tmp_path):
    records = [_record("c00"), _record("c01", abnormal=True), _record("f00", "failed")]
    ok = [r for r in records if r["status"] == "ok"]
    (page,) = write_index_pages(tmp_path, iter(ok), iter(records[2:]), (2, 1, 1))
    assert page.read_text() == index_html(records)


def test_each_input_is_opened_once_and_keyed_as_before(archive, taxonomy, tmp_path, monkeypatch):
    """The content key is hashed from the bytes the reader read: one open per input file, and
    the key is the SHA-256 content key of the file's bytes, as :func:`content_key` computes it
    by reading the file again."""
    import builtins
    from collections import Counter

    from bsi_d2.inference.batch import content_key

    _, inputs, recording = archive
    folder = inputs / "part0"
    opened: Counter[str] = Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(file).endswith(".dcm"):
            opened[Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # Path.read_bytes opens through io.open
    replay = ReplayPredictor(load_recording(recording), taxonomy)
    result = run_batch([folder], tmp_path / "out", replay, taxonomy, BatchOptions(progress=False))
    monkeypatch.undo()
    files = sorted(folder.glob("*.dcm"))
    assert len(result.done) == len(files) and not result.errors
    assert opened == Counter({f.name: 1 for f in files})
    assert set(result.done) == {content_key([f]) for f in files}
