"""``bsi-d2 bsi``: the post-processing, outputs and report of ``predict`` from annotations —
phantom Labelme files, a hand-edited Labelme file, a COCO file — and display values standing
in for counts."""

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bsi_d2 import cli
from bsi_d2.inference.outputs import RECORD_KEYS
from bsi_d2.phantom import write_phantoms
from bsi_d2.structures.masks import rle_to_mask

N = 20


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, N, seed=0, workers=1)  # no fork after torch has threads
    return out


def _records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "scans").glob("*/bsi.json")}


def _patient_of(record, labelme_dir: Path) -> str:
    digests = {
        f"sha256:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}": p.stem
        for p in labelme_dir.glob("*.json")
    }
    return next(digests[s] for s in record["source"] if s in digests)


@pytest.fixture(scope="module")
def from_labelme(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("bsi")
    assert cli.main(["bsi", str(phantoms / "labelme"), "--out", str(out), "--no-progress"]) == 0
    return out


def test_phantom_labelme_files_give_the_phantom_truth(phantoms, from_labelme):
    records = _records(from_labelme)
    assert len(records) == N
    for record in records.values():
        assert tuple(record) == RECORD_KEYS and record["status"] == "ok"
        assert record["model"]["engine"] == "annotations"
        pid = _patient_of(record, phantoms / "labelme")
        truth = json.loads((phantoms / "truth" / f"{pid}.json").read_text())
        assert record["bsi"] == pytest.approx(truth["bsi"], abs=1e-9), pid
        assert record["bstbi"] == pytest.approx(truth["bstbi"], abs=1e-9), pid
        assert record["lesion_count"] == truth["lesion_count"], pid
        assert record["burden_group"] == truth["burden_group"], pid
        assert record["counts_source"] == "counts"
    for name in ("bsi_summary.csv", "index.html", "errors.jsonl"):
        assert (from_labelme / name).is_file()
    abnormal = next(r for r in records.values() if r["abnormal"])
    report = (from_labelme / "scans" / abnormal["key"] / "report.html").read_text()
    assert "marked in the annotations" in report and "detected by the model" not in report


def _free_block(truth: dict, category: str, view: str, size: int) -> tuple[int, int]:
    """Top-left (row, col) of a size x size block inside the region and off every lesion."""
    masks = [rle_to_mask(r["segmentation"]) for r in truth["instances"]]
    region = next(
        m for m, r in zip(masks, truth["instances"], strict=True)
        if r["category_name"] == category and r["view"] == view
    )  # fmt: skip
    taken = np.zeros_like(region)
    for m, r in zip(masks, truth["instances"], strict=True):
        if r["category_name"] != category:
            taken |= m
    free = region & ~taken
    integral = cv2.integral(free.astype(np.uint8))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
    sums = sums + integral[:-size, :-size]
    rows, cols = np.nonzero(sums == size * size)
    return int(rows[len(rows) // 2]), int(cols[len(cols) // 2])


def test_a_lesion_added_by_hand_raises_the_bsi_by_the_hand_computed_amount(
    phantoms, from_labelme, tmp_path
):
    pid = "phantom_0003"
    edited = tmp_path / "edited"
    edited.mkdir()
    for suffix in (".json", ".png", ".counts.png"):
        (edited / f"{pid}{suffix}").write_bytes(
            (phantoms / "labelme" / f"{pid}{suffix}").read_bytes()
        )
    truth = json.loads((phantoms / "truth" / f"{pid}.json").read_text())
    row, col = _free_block(truth, "femurs", "anterior", 4)
    doc = json.loads((edited / f"{pid}.json").read_text())
    doc["shapes"].append(
        {"label": "lesion", "points": [[col, row], [col + 4, row + 4]], "group_id": 9999,
         "shape_type": "rectangle", "flags": {}, "description": "added by hand"}
    )  # fmt: skip
    (edited / f"{pid}.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert cli.main(["bsi", str(edited / f"{pid}.json"), "--out", str(out), "--no-progress"]) == 0
    (after,) = _records(out).values()
    before = next(
        r for r in _records(from_labelme).values()
        if _patient_of(r, phantoms / "labelme") == pid
    )  # fmt: skip
    femurs = next(r for r in before["regions"] if r["bone"] == "femurs")
    assert femurs["assessed"] == "both views"
    # 16 new lesion pixels in the anterior femurs; mean of the views, femurs weigh 8.9 %
    expected = 8.9 * (16 / femurs["region_pixels_anterior"]) / 2
    assert after["bsi"] - before["bsi"] == pytest.approx(expected, rel=1e-9)
    assert after["lesion_count"] == before["lesion_count"] + 1
    assert after["key"] != before["key"]  # the edited file is a new scan, not a resumed one


def test_a_coco_file_gives_the_same_indices(phantoms, from_labelme, tmp_path):
    coco = tmp_path / "coco"
    argv = ["convert", str(phantoms / "labelme"), "--out", str(coco), "--workers", "1"]
    assert cli.main(argv) == 0
    out = tmp_path / "out"
    annotations = coco / "annotations" / "instances_all.json"
    assert cli.main(["bsi", str(annotations), "--out", str(out), "--no-progress"]) == 0
    got = sorted((r["bsi"], r["bstbi"], r["lesion_count"]) for r in _records(out).values())
    expected = sorted(
        (r["bsi"], r["bstbi"], r["lesion_count"]) for r in _records(from_labelme).values()
    )
    assert len(got) == N
    for (bsi, bstbi, n), (bsi0, bstbi0, n0) in zip(got, expected, strict=True):
        assert bsi == pytest.approx(bsi0, abs=1e-9) and bstbi == pytest.approx(bstbi0, abs=1e-9)
        assert n == n0


def test_bad_annotations_fail_their_scan_and_the_rest_goes_on(phantoms, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for pid in ("phantom_0000", "phantom_0001"):
        for suffix in (".json", ".png", ".counts.png"):
            src = phantoms / "labelme" / f"{pid}{suffix}"
            (folder / src.name).write_bytes(src.read_bytes())
    doc = json.loads((folder / "phantom_0001.json").read_text())
    doc["shapes"][0]["label"] = "tibia"
    (folder / "phantom_0001.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert cli.main(["bsi", str(folder), "--out", str(out), "--no-progress"]) == 0
    statuses = sorted(r["status"] for r in _records(out).values())
    assert statuses == ["failed", "ok"]
    failed = next(r for r in _records(out).values() if r["status"] == "failed")
    assert "tibia" in failed["error"] and failed["bsi"] is None and failed["abnormal"] is None


def test_display_values_standing_in_for_counts_are_said(phantoms, tmp_path):
    # before: an 8-bit merged PNG without its counts file gave a BSTBI with nothing saying so
    folder = tmp_path / "no_counts"
    folder.mkdir()
    for suffix in (".json", ".png"):
        src = phantoms / "labelme" / f"phantom_0000{suffix}"
        (folder / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    assert cli.main(["bsi", str(folder), "--out", str(out), "--no-progress"]) == 0
    (record,) = _records(out).values()
    assert record["counts_source"] == "display"
    assert any("display values" in note for note in record["bstbi_notes"])
    report = (out / "scans" / record["key"] / "report.html").read_text()
    assert "display values stood in for raw counts" in report


def test_garbage_scans_fail_quality_control_in_the_csv_and_the_report(phantoms, tmp_path):
    # before: a blank or saturated image, or one without a skeleton, finished "ok" with
    # BSI 0.000, burden "none" and "No abnormal uptake detected"
    folder = tmp_path / "garbage"
    folder.mkdir()
    src = phantoms / "labelme" / "phantom_0000"
    doc = json.loads(src.with_suffix(".json").read_text())
    for name, display, counts in (
        ("blank", np.zeros((950, 512), np.uint8), np.zeros((950, 512), np.uint16)),
        ("saturated", np.full((950, 512), 255, np.uint8), np.full((950, 512), 65535, np.uint16)),
    ):
        cv2.imwrite(str(folder / f"{name}.png"), display)
        cv2.imwrite(str(folder / f"{name}.counts.png"), counts)
        (folder / f"{name}.json").write_text(json.dumps({**doc, "imagePath": f"{name}.png"}))
    for suffix in (".png", ".counts.png"):
        (folder / f"no_skeleton{suffix}").write_bytes(Path(f"{src}{suffix}").read_bytes())
    lesions_only = [s for s in doc["shapes"] if s["label"] == "lesion"]
    (folder / "no_skeleton.json").write_text(
        json.dumps({**doc, "imagePath": "no_skeleton.png", "shapes": lesions_only})
    )
    out = tmp_path / "out"
    assert cli.main(["bsi", str(folder), "--out", str(out), "--no-progress"]) == 0
    records = _records(out)
    assert sorted(r["status"] for r in records.values()) == ["qc_failed"] * 3
    reasons = sorted(r["error"] for r in records.values())
    assert any("every pixel has the value 0" in r for r in reasons)
    assert any("every pixel has the value 65535" in r for r in reasons)
    assert any("found no skull, spine, chest, pelvis" in r for r in reasons)
    for record in records.values():
        assert record["bsi"] is None and record["abnormal"] is None
        assert record["burden_group"] is None and record["qc"]["status"] == "failed"
        report = (out / "scans" / record["key"] / "report.html").read_text()
        assert "did not pass quality control" in report and "No abnormal uptake" not in report
    rows = (out / "bsi_summary.csv").read_text().splitlines()
    header = rows[0].split(",")
    for row in rows[1:]:
        values = dict(zip(header, next(csv.reader([row])), strict=True))
        assert values["status"] == "qc_failed" and values["qc_status"] == "failed"
        assert values["qc_failed"] and values["bsi"] == "" and values["abnormal"] == ""
    index = (out / "index.html").read_text()
    assert index.count("qc_failed") == 3


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_an_unusable_output_folder_fails_in_one_line_before_any_work(
    phantoms, tmp_path, kind, caplog
):
    # before: a raw traceback (predict only after loading the model)
    if kind == "file":
        out = tmp_path / "out.txt"
        out.write_text("not a folder")
        words = "the output folder is a file"
    else:
        out = Path("/sys/bsi_d2-cannot-write-here")  # root may write anywhere but sysfs
        words = "cannot write to the output folder"
    for argv in (
        ["bsi", str(phantoms / "labelme"), "--out", str(out)],
        [
            "predict",
            str(phantoms / "labelme"),
            "--config-file",
            "no-such-config.yaml",
            "--out",
            str(out),
        ],
    ):
        caplog.clear()
        assert cli.main(argv) == 2, argv[0]
        assert any(words in r.getMessage() for r in caplog.records), argv[0]


def test_exit_codes_say_whether_anything_was_done(phantoms, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for suffix in (".json", ".png", ".counts.png"):
        src = phantoms / "labelme" / f"phantom_0002{suffix}"
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.json").write_text('{"shapes": [], "imagePath": "missing.png"}')
    # one good scan and one broken file: done, exit 0; with --strict, exit 1
    assert cli.main(["bsi", str(folder), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    strict = ["bsi", str(folder), "--out", str(tmp_path / "b"), "--no-progress", "--strict"]
    assert cli.main(strict) == 1
    # before: exit 0 with zero scans done
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "broken.json").write_text('{"shapes": [], "imagePath": "missing.png"}')
    assert cli.main(["bsi", str(only_broken), "--out", str(tmp_path / "c"), "--no-progress"]) == 1
