"""One patient's studies: ordered by date (never guessed), compared pair by pair, worded for
the physician; a study without a result makes its pairs not assessable."""

from pathlib import Path

import pytest
from followup_records import PATIENT, lesion, record

from bsi_d2.followup.compare import (
    FOLLOWUP_AID,
    FollowupError,
    FollowupOptions,
    Study,
    build_studies,
    follow_up,
    read_studies_map,
)

SPINE = lesion(1, "spine", {"anterior": (128, 380), "posterior": (384, 380)})


def studies(*records):
    return build_studies([(r, Path("unused")) for r in records])


def only_patient(result):
    (patient,) = result.patients
    return patient


def three_studies():
    pelvis = [lesion(k, "pelvis", {"posterior": (340 + 20 * k, 470)}) for k in (2, 3)]
    return studies(
        record("c3", [SPINE, *pelvis], bsi=2.05, date="2024-09-01"),
        record("c1", [SPINE], bsi=1.20, date="2024-01-10"),
        record("c2", [SPINE], bsi=1.20, date="2024-05-02"),
    )


def test_studies_are_ordered_by_date_and_paired_consecutively_and_baseline_to_latest():
    patient = only_patient(follow_up(three_studies()))
    assert [s.key for s in patient.studies] == ["c1", "c2", "c3"]
    spans = [(p["earlier"]["key"], p["later"]["key"], p["span"]) for p in patient.pairs]
    assert spans == [
        ("c1", "c2", "consecutive"),
        ("c2", "c3", "consecutive"),
        ("c1", "c3", "baseline to latest"),
    ]
    assert patient.pairs[0]["interval_days"] == 113


def test_the_wording_states_the_changes_for_the_physician_to_confirm():
    patient = only_patient(follow_up(three_studies()))
    pair = patient.pairs[1]
    assert pair["bsi"]["change"] == pytest.approx(0.85)
    assert pair["text"].startswith(
        "BSI increased from 1.20 % to 2.05 % (+0.85 percentage points); 2 new lesions "
        "(pelvis); 1 lesion seen in both studies."
    )
    assert pair["text"].endswith(FOLLOWUP_AID)
    assert pair["category"] is None and "ategory" not in pair["text"]  # no thresholds given
    assert patient.pairs[0]["text"].startswith("BSI unchanged at 1.20 %; no new lesion; 1 lesion")
    removed = only_patient(follow_up(studies(
        record("c1", [SPINE], date="2024-01-10"), record("c2", [], bsi=0.2, date="2024-03-10"),
    ))).pairs[0]  # fmt: skip
    assert "1 lesion no longer seen (spine)" in removed["text"]
    assert removed["lesion_count"] == {"earlier": 1, "later": 0, "change": -1}
    assert removed["regions"][0]["bone"] == "spine"


def test_a_study_that_is_not_ok_makes_its_pairs_not_assessable_never_unchanged():
    patient = only_patient(follow_up(studies(
        record("c1", [SPINE], date="2024-01-10"),
        record("c2", [SPINE], date="2024-03-10", status="qc_failed"),
        record("c3", [SPINE], date="2024-06-10"),
    ), FollowupOptions(delta_bsi=0.5, new_lesions=1)))  # fmt: skip
    first, second, overall = patient.pairs
    for pair in (first, second):
        assert pair["assessable"] is False and pair["category"] is None
        assert pair["bsi"]["change"] is None and pair["lesions"] is None
        assert "failed quality control" in pair["not_assessable_reason"]
        assert pair["text"].startswith("Not assessable:")
        assert "unchanged" not in pair["text"] and "stable" not in pair["text"]
    assert overall["assessable"] and overall["category"] == "below the thresholds"
    for status in ("not_assessed", "failed"):
        (pair,) = only_patient(follow_up(studies(
            record("c1", [SPINE], date="2024-01-10"),
            record("c2", [SPINE], date="2024-03-10", status=status),
        ))).pairs  # fmt: skip
        assert pair["assessable"] is False and "Not assessable" in pair["text"]


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        ([("2024-01-10", "exact"), (None, None)], "no study date for c2"),
        ([("2024-01-10", "exact"), ("2024-01-10", "exact")], "may be of the same day"),
        ([("2024-01", "month"), ("2024-01-20", "exact")], "may be of the same day"),
        ([("2023-06-02", "shifted"), ("2024-01-20", "exact")], "shifted and unshifted"),
    ],
)
def test_studies_that_cannot_be_ordered_give_the_patient_an_error_not_a_guess(dates, message):
    records = [record(f"c{k}", [SPINE], date=d, kind=kind) for k, (d, kind) in enumerate(dates, 1)]
    patient = only_patient(follow_up(studies(*records)))
    assert patient.pairs == [] and len(patient.errors) == 1 and message in patient.errors[0]


def test_months_and_shifted_dates_order_when_they_cannot_coincide():
    patient = only_patient(follow_up(studies(
        record("c2", [SPINE], date="2024-03", kind="month"),
        record("c1", [SPINE], date="2024-02", kind="month"),
    )))  # fmt: skip
    assert [s.key for s in patient.studies] == ["c1", "c2"] and patient.errors == []
    assert patient.pairs[0]["interval_days"] is None  # months: no day count
    shifted = only_patient(follow_up(studies(
        record("c1", [SPINE], date="2023-06-02", kind="shifted"),
        record("c2", [SPINE], date="2023-08-01", kind="shifted"),
    )))  # fmt: skip
    assert shifted.pairs[0]["interval_days"] == 60


def test_a_category_is_suggested_only_against_thresholds_the_user_gave():
    def category(**thresholds):
        return only_patient(follow_up(three_studies(), FollowupOptions(**thresholds))).pairs[1]

    assert category()["category"] is None
    by_bsi = category(delta_bsi=0.5)
    assert by_bsi["category"] == "progression"
    assert (
        "Suggested category by the thresholds given (a BSI rise of 0.50 percentage points or "
        "more): progression. A flare in the first months of treatment"
    ) in by_bsi["text"]
    assert category(delta_bsi=1.0)["category"] == "below the thresholds"
    assert category(delta_bsi=0.85)["category"] == "progression"  # 2.05 - 1.20, in floats
    assert category(new_lesions=2)["category"] == "progression"
    assert category(new_lesions=3)["category"] == "below the thresholds"
    fall = only_patient(follow_up(studies(
        record("c1", [SPINE], bsi=2.0, date="2024-01-10"),
        record("c2", [SPINE], bsi=1.0, date="2024-04-10"),
    ), FollowupOptions(delta_bsi=0.5))).pairs[0]  # fmt: skip
    assert fall["category"] == "decrease" and "flare" not in fall["text"]


def test_records_without_a_patient_are_not_linked_and_one_patient_per_key():
    result = follow_up(studies(
        record("c1", [SPINE], date="2024-01-10"),
        record("c2", [SPINE], date="2024-03-10", patient="pt" + "b" * 16),
        record("c3", [SPINE], date="2024-03-10", patient=None),
    ))  # fmt: skip
    assert [p.patient_key for p in result.patients] == [PATIENT, "pt" + "b" * 16]
    assert [p.notes for p in result.patients] == [["a single study: nothing to compare"]] * 2
    assert [s.key for s in result.not_linked] == ["c3"]


def test_a_study_in_two_folders_counts_once_when_identical_and_is_an_error_otherwise():
    first = record("c1", [SPINE], date="2024-01-10")
    second = record("c2", [SPINE], date="2024-05-10")
    again = dict(second)
    patient = only_patient(follow_up(studies(first, second, again)))
    assert len(patient.studies) == 2 and len(patient.pairs) == 1
    changed = {**second, "bsi": 3.0}
    patient = only_patient(follow_up(studies(first, second, changed)))
    assert patient.pairs == [] and "study s2 has 2 different records" in patient.errors[0]


def test_a_studies_map_links_and_dates_plain_images_under_a_pseudonym(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("key,patient,date\nc1,DOE^JANE,2024-01-10\ns2,DOE^JANE,20240510\n")
    mapping = read_studies_map(path, salt="site-salt")
    patient_key = mapping["c1"][0]
    assert patient_key.startswith("pt") and len(patient_key) == 18 and "DOE" not in patient_key
    assert mapping["s2"] == (patient_key, ("2024-05-10", "exact"))
    plain = [record(k, [SPINE], date=None, kind=None, patient=None) for k in ("c1", "c2")]
    result = follow_up(build_studies([(r, tmp_path) for r in plain], mapping))
    assert [s.key for s in only_patient(result).studies] == ["c1", "c2"]
    kept = read_studies_map(_write(tmp_path, f"key,patient,date\nc1,{PATIENT},2024-02\n"))
    assert kept["c1"] == (PATIENT, ("2024-02", "month"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,date\nc1,2024-01-01\n", "needs the columns"),
        ("key,patient,date\nc1,P1,10/01/2024\n", "YYYY-MM-DD"),
        ("key,patient,date\nc1,,2024-01-01\n", "needs both"),
        ("key,patient,date\nc1,P1,2024-01-01\nc1,P2,2024-01-01\n", "given twice"),
    ],
)
def test_a_bad_studies_map_is_named(tmp_path, text, message):
    with pytest.raises(FollowupError, match=message):
        read_studies_map(_write(tmp_path, text))


def _write(folder, text):
    path = folder / "map.csv"
    path.write_text(text)
    return path


def test_a_study_is_identified_by_its_study_key_else_its_scan_key():
    rec = record("c1", [SPINE])
    assert Study(rec, Path("x"), None, None, None).identity == "s1"
    assert Study({**rec, "study_key": None}, Path("x"), None, None, None).identity == "c1"
