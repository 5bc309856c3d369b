"""Follow-up studies of phantom patients: the baseline untouched, the same body and identity,
a new study, lesion fates and BSI changes that agree with the truth, study links a reader
derives alike, and the reference table."""

import csv
import datetime
import json
from itertools import pairwise

import numpy as np
import pydicom
import pytest

from bsi_d2 import cli
from bsi_d2.io.pseudonym import kept_study_date, patient_key, study_key
from bsi_d2.phantom import generate_phantom, write_phantoms
from bsi_d2.phantom.folder import REFERENCE_COLUMNS
from bsi_d2.phantom.followup import (
    FATES,
    INTERVAL_DAYS,
    LIMITS,
    NEW,
    TRENDS,
    evolve,
    follow_up_series,
)
from bsi_d2.postprocess.bsi import burden_group

N, K = 3, 2  # patient 2 of seed 0 has no metastasis at the baseline
BASELINES = [f"phantom_{i:04d}" for i in range(N)]
# what a follow-up run adds to a baseline's truth
LINK_KEYS = ("study_key", "patient_key", "follow_up")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    plain = tmp_path_factory.mktemp("plain")
    follow = tmp_path_factory.mktemp("follow")
    write_phantoms(plain, N, seed=0, workers=1)
    paths = write_phantoms(follow, N, seed=0, workers=1, follow_up=K)
    return plain, follow, paths


def truth(out, pid):
    return json.loads((out / "truth" / f"{pid}.json").read_text())


def studies(pid):
    return [pid] + [f"{pid}_v{v}" for v in range(1, K + 1)]


def test_layout_and_manifest(runs):
    _, follow, paths = runs
    assert [p.stem for p in paths] == [s for pid in BASELINES for s in studies(pid)]
    manifest = json.loads((follow / "manifest.json").read_text())
    assert manifest["ids"] == BASELINES and manifest["follow_up"] == K
    assert manifest["follow_up_ids"] == [s for pid in BASELINES for s in studies(pid)[1:]]
    fates = [
        f
        for sid in manifest["follow_up_ids"]
        for f in truth(follow, sid)["follow_up"]["lesion_fates"].values()
    ]
    summary = manifest["summary"]["follow_ups"]
    assert summary["studies"] == N * K
    assert summary["lesion_fates"] == {f: fates.count(f) for f in (*FATES, NEW)}
    for sid in manifest["follow_up_ids"]:
        for rel in (f"dicom/{sid}.dcm", f"labelme/{sid}.png", f"labelme/{sid}.counts.png"):
            assert (follow / rel).is_file(), rel


def test_baseline_unchanged_by_follow_ups(runs):
    plain, follow, _ = runs
    for pid in BASELINES:
        for rel in (
            f"dicom/{pid}.dcm",
            f"labelme/{pid}.png",
            f"labelme/{pid}.counts.png",
            f"labelme/{pid}.json",
        ):
            assert (plain / rel).read_bytes() == (follow / rel).read_bytes(), rel
        linked = truth(follow, pid)
        assert linked["follow_up"]["visit"] == 0 and linked["follow_up"]["previous"] is None
        assert linked["follow_up"]["studies"] == studies(pid)
        unlinked = {k: v for k, v in linked.items() if k not in LINK_KEYS}
        assert json.dumps(unlinked, indent=1) + "\n" == (
            (plain / "truth" / f"{pid}.json").read_text()
        )
        assert not (plain / "labelme" / f"{pid}.meta.json").exists()
        assert (follow / "labelme" / f"{pid}.meta.json").is_file()


def test_follow_up_is_deterministic(runs, tmp_path):
    _, follow, _ = runs
    write_phantoms(tmp_path, 1, seed=0, workers=1, follow_up=K)
    for sid in studies("phantom_0000")[1:]:
        for rel in (
            f"dicom/{sid}.dcm",
            f"labelme/{sid}.png",
            f"labelme/{sid}.counts.png",
            f"labelme/{sid}.json",
            f"labelme/{sid}.meta.json",
            f"truth/{sid}.json",
        ):
            assert (tmp_path / rel).read_bytes() == (follow / rel).read_bytes(), rel


def test_same_patient_new_study(runs):
    _, follow, _ = runs
    for pid in BASELINES:
        base = truth(follow, pid)["parameters"]
        ds = [pydicom.dcmread(follow / "dicom" / f"{s}.dcm") for s in studies(pid)]
        assert len({(d.PatientID, str(d.PatientName), d.PatientBirthDate) for d in ds}) == 1
        assert len({d.StudyInstanceUID for d in ds}) == K + 1
        assert (
            len({d.SeriesInstanceUID for d in ds}) == len({d.SOPInstanceUID for d in ds}) == K + 1
        )
        dates = [datetime.datetime.strptime(d.StudyDate, "%Y%m%d").date() for d in ds]
        for v, sid in enumerate(studies(pid)[1:], start=1):
            block = truth(follow, sid)["follow_up"]
            gap = (dates[v] - dates[v - 1]).days
            assert INTERVAL_DAYS[0] <= gap <= INTERVAL_DAYS[1]
            assert block["days_since_previous"] == gap
            assert block["days_since_baseline"] == (dates[v] - dates[0]).days
            params = truth(follow, sid)["parameters"]
            moved = ("shift", "rotation_deg", "total_counts", "low_count", "hot_spots")
            moved += ("bone_counts_per_pixel", "kidney_uptake")
            assert {k: v for k, v in params.items() if k not in moved} == {
                k: v for k, v in base.items() if k not in moved
            }
            dx, dy = block["position_shift_px"]
            assert np.allclose(params["shift"], [base["shift"][0] + dx, dy], atol=0.011)
            assert params["rotation_deg"] - base["rotation_deg"] == pytest.approx(
                block["rotation_change_deg"], abs=2e-3
            )
            assert 0 < max(abs(dx), abs(dy)) <= 6.0 and abs(block["rotation_change_deg"]) <= 1.0


def test_fates_agree_with_the_lesions(runs):
    _, follow, _ = runs
    for pid in BASELINES:
        ever = {m["lesion_id"] for m in truth(follow, pid)["lesions"]}
        for previous, sid in pairwise(studies(pid)):
            before = {m["lesion_id"]: m for m in truth(follow, previous)["lesions"]}
            now = {m["lesion_id"]: m for m in truth(follow, sid)["lesions"]}
            block = truth(follow, sid)["follow_up"]
            assert block["previous"] == previous and block["patient"] == pid
            fates = {int(k): f for k, f in block["lesion_fates"].items()}
            assert {k for k, f in fates.items() if f != NEW} == set(before)
            assert {k for k, f in fates.items() if f != "resolved"} == set(now)
            for lesion_id, fate in fates.items():
                if fate == "resolved":
                    assert lesion_id not in now
                elif fate == NEW:
                    assert lesion_id not in ever  # a new id is never one used before
                elif fate == "grown":
                    assert now[lesion_id]["diameter_mm"] > before[lesion_id]["diameter_mm"]
                elif fate == "shrunk":
                    assert now[lesion_id]["diameter_mm"] < before[lesion_id]["diameter_mm"]
            counts = {f: list(fates.values()).count(f) for f in (*FATES, NEW)}
            assert block["new_lesions"] == counts[NEW]
            assert block["resolved_lesions"] == counts["resolved"]
            assert block["persistent_lesions"] == len(fates) - counts[NEW] - counts["resolved"]
            assert block["trend"] in TRENDS
            ever |= set(now)


def test_deltas_are_differences_of_the_truths(runs):
    _, follow, _ = runs
    for pid in BASELINES:
        for previous, sid in pairwise(studies(pid)):
            a, b = truth(follow, previous), truth(follow, sid)
            block = b["follow_up"]
            assert block["delta_bsi"] == b["bsi"] - a["bsi"]
            assert block["delta_reference_bsi"] == b["reference"]["bsi"] - a["reference"]["bsi"]
            assert block["delta_lesion_count"] == b["lesion_count"] - a["lesion_count"]


def test_study_links_are_what_a_reader_derives(runs):
    _, follow, _ = runs
    for pid in BASELINES:
        for sid in studies(pid):
            ds = pydicom.dcmread(follow / "dicom" / f"{sid}.dcm")
            meta = json.loads((follow / "labelme" / f"{sid}.meta.json").read_text())
            date, kind = kept_study_date(ds.StudyDate, "shift", ds.PatientID, None, salt=None)
            assert meta == {
                "study_key": study_key(study_uid=ds.StudyInstanceUID, salt=None),
                "patient_key": patient_key(ds.PatientID, None, salt=None),
                "study_date": date,
                "study_date_kind": kind,
            }
            t = truth(follow, sid)
            assert (t["study_key"], t["patient_key"]) == (meta["study_key"], meta["patient_key"])
            assert t["follow_up"]["study_date"] == date


def test_reference_csv(runs):
    plain, follow, _ = runs
    for out, ids in ((plain, BASELINES), (follow, [s for p in BASELINES for s in studies(p)])):
        with (out / "reference.csv").open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        assert tuple(reader.fieldnames) == REFERENCE_COLUMNS
        assert [r["study"] for r in rows] == ids
        for row in rows:
            t = truth(out, row["study"])
            assert row["patient"] == row["study"].split("_v")[0]
            assert int(row["visit"]) == (0 if row["study"] in BASELINES else int(row["study"][-1]))
            assert float(row["bsi"]) == t["bsi"]
            assert float(row["reference_bsi"]) == t["reference"]["bsi"]
            assert int(row["lesion_count"]) == t["lesion_count"]
            assert row["burden_group"] == burden_group(t["lesion_count"]) == t["burden_group"]
            assert row["abnormal"] == ("1" if t["lesion_count"] > 0 else "0")
    linked = {r["study"]: r for r in csv.DictReader((follow / "reference.csv").open(newline=""))}
    for pid in BASELINES:
        meta = json.loads((follow / "labelme" / f"{pid}.meta.json").read_text())
        assert linked[pid]["study_key"] == meta["study_key"]
        assert len({linked[s]["patient_key"] for s in studies(pid)}) == 1


def test_evolve_draws_every_fate_and_keeps_lesions_visible():
    model = generate_phantom(1, seed=0).model
    lesions = model.disease.metastases
    rng = np.random.default_rng(0)
    seen = []
    for trend in TRENDS.values():
        for _ in range(10):
            kept, fates = evolve(lesions, trend, model, rng)
            seen += fates.values()
            assert [m.lesion_id for m in kept] == [k for k, f in fates.items() if f != "resolved"]
            (d_lo, _), (i_lo, _) = LIMITS["standard"]
            assert all(m.intensity >= i_lo and m.diameter_mm >= d_lo for m in kept)
    assert set(seen) == set(FATES)


def test_hard_preset_follow_up_keeps_the_anatomy():
    baseline = generate_phantom(0, seed=0, difficulty="hard")
    first, later = follow_up_series(baseline, 1)
    assert first.truth["follow_up"]["visit"] == 0 and "follow_up" not in baseline.truth
    assert later.patient == "phantom_0000_v1" and later.difficulty == "hard"
    before, after = baseline.model.anatomy, later.model.anatomy
    for key, region in before.regions.items():  # moved and turned, not reshaped
        assert after.regions[key].area == pytest.approx(region.area, rel=1e-6)
    assert after.regions["spine"].centroid.distance(before.regions["spine"].centroid) > 0.0
    fates = later.truth["follow_up"]["lesion_fates"]
    ids = {m.lesion_id for m in baseline.model.disease.metastases}
    assert {int(k) for k, f in fates.items() if f != NEW} == ids
    assert {m["lesion_id"] for m in later.truth["lesions"]} == {
        int(k) for k, f in fates.items() if f != "resolved"
    }


def test_cli_follow_up(tmp_path, capsys):
    argv = ["phantom", "--scans", "1", "--out", str(tmp_path), "--workers", "1"]
    assert cli.main([*argv, "--follow-up", "-1"]) == 2
    assert cli.main([*argv, "--follow-up", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote 1 of 1 phantoms" in out and "1 follow-up studies" in out
    assert truth(tmp_path, "phantom_0000_v1")["follow_up"]["previous"] == "phantom_0000"
