"""``bsi-d2 followup`` end to end on hand-written output folders."""

import csv
import json

import pytest
from followup_records import PATIENT, lesion, record, write_results

from bsi_d2 import cli

OTHER = "pt" + "b" * 16
SECRET = "DOE^JANE"  # in an input path: must reach no output


def spine(dx=0.0):
    return lesion(1, "spine", {"anterior": (128 + dx, 380), "posterior": (384 + dx, 380)})


def pelvis():
    return lesion(2, "pelvis", {"posterior": (360, 470)})


def results(tmp_path):
    first = [
        record("c1", [spine()], bsi=1.20, date="2024-01-10"),
        record("c2", [spine()], bsi=1.30, date="2024-05-02", status="qc_failed"),
        record("c5", [spine()], bsi=0.5, date="2024-02-01", patient=OTHER),
        record("c9", [spine()], date="2024-02-01", patient=None),
    ]
    second = [
        record("c1", [spine()], bsi=1.20, date="2024-01-10"),  # the same study again
        record("c3", [spine(2.0), pelvis()], bsi=2.05, date="2024-09-01", shift=(2.0, 0.0)),
    ]
    third = [record("c6", [], bsi=0.0, date="2024-06-01", patient=OTHER)]
    for rec in first + second + third:
        rec["source"] = [f"/archive/{SECRET}/IM0001.dcm"]
    return (
        write_results(tmp_path / "run1", first),
        write_results(tmp_path / "run2", second),
        write_results(tmp_path / "run3", third, overlay=False),
    )


def test_followup_writes_pairs_json_and_pages_with_pseudonymous_names_only(tmp_path):
    folders = results(tmp_path)
    out = tmp_path / "followup"
    argv = ["followup", *map(str, folders), "--out", str(out), "--new-lesions", "1"]
    assert cli.main(argv) == 0

    with open(out / "followup_pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    spans = [(r["patient_key"], r["earlier_key"], r["later_key"]) for r in rows]
    assert spans == [
        (PATIENT, "c1", "c2"),
        (PATIENT, "c2", "c3"),
        (PATIENT, "c1", "c3"),
        (OTHER, "c5", "c6"),
    ]
    assert [r["assessable"] for r in rows] == ["False", "False", "True", "True"]
    overall = rows[2]
    assert float(overall["delta_bsi"]) == pytest.approx(0.85)
    counts = [overall[f"{k}_lesions"] for k in ("new", "resolved", "persistent")]
    assert counts == ["1", "0", "1"]
    assert overall["category"] == "progression" and overall["new_lesion_sites"] == "pelvis"
    assert rows[3]["category"] == "below the thresholds"
    assert "delta_bsi_spine" in rows[0] and rows[0]["delta_bsi_spine"] == ""

    doc = json.loads((out / "followup.json").read_text())
    assert doc["thresholds"] == {"progression_delta_bsi": None, "new_lesions": 1}
    assert [p["patient_key"] for p in doc["patients"]] == [PATIENT, OTHER]
    assert [s["key"] for s in doc["not_linked"]] == ["c9"]

    page = (out / "patients" / f"{PATIENT}.html").read_text()
    assert "data:image/png;base64," in page and "not a diagnosis" in page
    assert 'src="pt' + "a" * 16 + '/c1.png"' in page and 'src="pt' + "a" * 16 + '/c3.png"' in page
    assert (out / "patients" / PATIENT / "c1.png").is_file()
    assert "Not assessable" in page
    other = (out / "patients" / f"{OTHER}.html").read_text()
    assert "No overlay image for this scan" in other  # c6 was written without one
    index = (out / "index.html").read_text()
    assert f"patients/{PATIENT}.html" in index and "c9" in index

    for path in out.rglob("*"):
        assert SECRET not in path.name and "run1" not in path.name
        if path.suffix in {".csv", ".json", ".html"}:
            text = path.read_text()
            assert SECRET not in text and str(tmp_path) not in text, path


def test_a_study_with_two_different_records_is_listed_not_guessed(tmp_path):
    first = write_results(tmp_path / "a", [record("c1", [spine()], date="2024-01-10")])
    second = write_results(tmp_path / "b", [record("c1", [spine()], bsi=4.0, date="2024-01-10")])
    out = tmp_path / "o"
    assert cli.main(["followup", str(first), str(second), "--out", str(out)]) == 0
    (patient,) = json.loads((out / "followup.json").read_text())["patients"]
    assert patient["pairs"] == [] and "different records" in patient["errors"][0]
    assert "Patients not compared" in (out / "index.html").read_text()


def test_the_same_scan_read_from_another_place_is_one_study(tmp_path, caplog):
    first = record("c1", [spine()], date="2024-01-10")
    second = record("c2", [], bsi=0.0, date="2024-04-10")
    moved = {**first, "source": ["elsewhere/IM0001.dcm"]}
    a = write_results(tmp_path / "a", [first, second])
    b = write_results(tmp_path / "b", [moved])
    (b / "scans" / "c7").mkdir()
    (b / "scans" / "c7" / "bsi.json").write_text("{not json")
    out = tmp_path / "o"
    assert cli.main(["followup", str(a), str(b), "--out", str(out)]) == 0
    assert "unreadable record skipped" in caplog.text
    (patient,) = json.loads((out / "followup.json").read_text())["patients"]
    assert patient["errors"] == [] and len(patient["pairs"]) == 1


def test_a_studies_map_links_plain_images(tmp_path):
    plain = [record(k, [spine()], date=None, kind=None, patient=None) for k in ("c1", "c2")]
    folder = write_results(tmp_path / "run", plain)
    mapping = tmp_path / "map.csv"
    mapping.write_text("key,patient,date\nc1,DOE^JANE,2024-01-10\nc2,DOE^JANE,2024-04-10\n")
    out = tmp_path / "o"
    argv = ["followup", str(folder), "--out", str(out), "--studies", str(mapping)]
    assert cli.main(argv) == 0
    (patient,) = json.loads((out / "followup.json").read_text())["patients"]
    assert len(patient["pairs"]) == 1 and patient["pairs"][0]["assessable"]
    assert "DOE" not in (out / "followup.json").read_text()


def test_a_folder_that_is_not_an_output_folder_exits_2(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    assert cli.main(["followup", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "not a bsi-d2 output folder" in caplog.text
    assert not (tmp_path / "o").exists()
    bad_map = tmp_path / "map.csv"
    bad_map.write_text("key,patient,date\nc1,P,01/02/2024\n")
    folder = write_results(tmp_path / "run", [record("c1", [spine()])])
    argv = ["followup", str(folder), "--out", str(tmp_path / "o"), "--studies", str(bad_map)]
    assert cli.main(argv) == 2
    assert "map.csv:2" in caplog.text
