"""The one lesion model: every index of a scan derived from one assignment of its lesions.

Each test is a defect found by feeding hand-made cases through the post-processing, with the
numbers computed by hand. The image is 20 x 40: columns 0..19 are the anterior view, 20..39 the
posterior one (the posterior view is mirrored, so its spine sits at the same mirrored column).
"""

import numpy as np
import pytest
from hand_drawn import H, W, box, make

from bsi_d2.inference.outputs import scan_record, summary_csv
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.report.html import finding_text, lesion_sites, scan_report_html
from bsi_d2.taxonomy import load_taxonomy, taxonomy_from_dict

TAX = load_taxonomy()
SKULL, SPINE, CHEST, PELVIS, KIDNEY, LESION = 1, 2, 3, 8, 10, 11


def spines():
    """Spine in both views: anterior columns 8..11 (midline 9.5), posterior 28..31 (29.5)."""
    return [(SPINE, 0.9, box(0, 20, 8, 12)), (SPINE, 0.9, box(0, 20, 28, 32))]


def ok(record):
    return {**record, "status": "ok", "key": "k"}


# -- counting: a lesion seen in both views is one lesion ------------------------------------


def test_one_spine_lesion_seen_in_both_views_is_a_single_lesion():
    # before: lesion_count 2 and "Multiple lesions (2)"
    a = analyse_scan(
        make(*spines(), (LESION, 0.9, box(4, 6, 9, 11)), (LESION, 0.9, box(4, 6, 29, 31))),
        None,
        TAX,
    )
    assert a.record["lesion_count"] == 1
    assert a.record["lesion_instances"] == 2
    css, sentence = finding_text(ok(a.record), TAX)
    assert css == "abnormal" and sentence.startswith("A single lesion")


def test_four_lesions_in_both_views_are_medium_burden():
    # before: 8 instances, burden "extensive" instead of "medium"
    items = spines()
    for r in (1, 6, 11, 16):
        items += [(LESION, 0.9, box(r, r + 2, 9, 11)), (LESION, 0.9, box(r, r + 2, 29, 31))]
    record = analyse_scan(make(*items), None, TAX).record
    assert record["lesion_count"] == 4
    assert record["burden_group"] == "medium"


def test_matching_can_be_switched_off():
    items = [*spines(), (LESION, 0.9, box(4, 6, 9, 11)), (LESION, 0.9, box(4, 6, 29, 31))]
    record = analyse_scan(make(*items), None, TAX, match_views=False).record
    assert record["lesion_count"] == 2 and record["views_matched"] is False


def test_duplicate_lesion_instances_are_one_lesion_and_confluent_ones_two():
    # 3x3 and 3x3 sharing 3x2 = 6 px, more than half of the smaller (9): a duplicate
    items = [*spines(), (LESION, 0.9, box(4, 7, 8, 11)), (LESION, 0.8, box(4, 7, 9, 12))]
    record = analyse_scan(make(*items), None, TAX).record
    assert record["lesion_count"] == 1
    # 9 + 9 px overlapping on 6: 12 px, all in the spine's columns 8..11
    assert record["lesion_pixels_counted"] == 12
    # 4x4 and 4x4 sharing one column of 4 px (a quarter of either): two confluent lesions
    items = [*spines(), (LESION, 0.9, box(2, 6, 8, 12)), (LESION, 0.8, box(5, 9, 8, 12))]
    record = analyse_scan(make(*items), None, TAX).record
    assert record["lesion_count"] == 2 and record["lesion_pixels_counted"] == 28


# -- BSTBI as seed 002 defines it -----------------------------------------------------------


def test_bstbi_ignores_a_lesion_wholly_inside_the_kidney():
    # before: BSI 0 but BSTBI 5 * 8 / (4 * 8 + 800) = 0.048
    items = [
        (CHEST, 0.9, box(0, 20, 0, 20)),
        (KIDNEY, 0.9, box(12, 16, 24, 28)),
        (LESION, 0.9, box(12, 14, 24, 28)),
    ]
    record = analyse_scan(make(*items), np.ones((H, W), np.float32), TAX).record
    assert record["bsi"] == 0.0
    assert record["bstbi"] == 0.0
    assert record["lesion_count"] == 0 and record["lesions_in_decoys"] == 1


def test_bstbi_per_view_and_their_mean():
    # anterior: 4 lesion px in the spine, counts 1 -> 5*4 / (4*4 + 400) = 20/416;
    # posterior: no lesion -> 0; mean 10/416
    items = [*spines(), (LESION, 0.9, box(2, 4, 9, 11))]
    record = analyse_scan(make(*items), np.ones((H, W), np.float32), TAX).record
    assert record["bstbi_anterior"] == pytest.approx(20 / 416)
    assert record["bstbi_posterior"] == pytest.approx(0.0)
    assert record["bstbi"] == pytest.approx(10 / 416)


def test_default_taxonomy_has_a_bladder_decoy_left_out_of_the_burden():
    bladder = TAX.resolve_label("bladder")
    assert bladder is not None and bladder.is_decoy and bladder.exclude_from_burden


def _with_bladder():
    raw = TAX.to_dict()
    raw["classes"] = [c for c in raw["classes"] if c["name"] != "bladder"]
    raw["classes"].append(
        {"id": 12, "name": "bladder", "kind": "decoy", "exclude_from_burden": True,
         "labels": ["bladder"], "color": [0, 0, 255], "report": "bladder"}
    )  # fmt: skip
    return taxonomy_from_dict(raw, "test")


def test_bstbi_stays_within_0_and_1_with_a_lesion_over_the_bladder():
    # before: bladder pixels of the lesion counted in L and subtracted as B: BSTBI 1.198
    tax = _with_bladder()
    counts = np.ones((H, W), np.float32)
    counts[10:18, 4:16] = 200.0  # a hot bladder over the anterior pelvis
    items = [
        (PELVIS, 0.9, box(8, 20, 0, 20)),
        (12, 0.95, box(10, 18, 4, 16)),
        (LESION, 0.9, box(8, 12, 2, 14)),  # 48 px, 20 of them over the bladder
    ]
    record = analyse_scan(make(*items), counts, tax).record
    assert 0.0 <= record["bstbi_anterior"] <= 1.0
    # L = the 28 lesion pixels off the bladder (counts 1); R = 400 px: 96 at 200, 304 at 1;
    # B = the 96 bladder pixels: 5 * 28 / (4 * 28 + 304 + 96 * 200 - 96 * 200)
    assert record["bstbi_anterior"] == pytest.approx(140 / 416)
    assert record["bstbi_notes"] == []


def test_bstbi_says_when_no_bladder_was_segmented_or_counts_are_display_values():
    items = [*spines(), (LESION, 0.9, box(2, 4, 9, 11))]
    counts = np.ones((H, W), np.float32)
    record = analyse_scan(make(*items), counts, TAX, counts_source="display").record
    notes = " ".join(record["bstbi_notes"])
    assert "bladder" in notes and "display" in notes
    assert record["counts_source"] == "display"


# -- lesions over decoys: bone wins unless the lesion lies wholly inside the decoy ----------


def _rib_over_kidney(chest_score, kidney_score):
    return make(
        (CHEST, chest_score, box(0, 20, 20, 40)),
        (KIDNEY, kidney_score, box(10, 16, 24, 30)),
        (LESION, 0.9, box(10, 12, 23, 26)),  # 6 px: 4 over the kidney, 2 on rib only
    )


@pytest.mark.parametrize(("chest", "kidney"), [(0.6, 0.9), (0.9, 0.6)])
def test_a_rib_lesion_over_the_kidney_counts_whatever_the_scores(chest, kidney):
    # before: with the kidney scoring higher, 4 of its 6 pixels vanished and the scan was
    # called normal (abnormal False); with the scores swapped it was found
    a = analyse_scan(_rib_over_kidney(chest, kidney), None, TAX)
    assert a.record["abnormal"] is True
    chest_row = next(r for r in a.record["regions"] if r["bone"] == "chest")
    assert chest_row["involvement_posterior"] == pytest.approx(6 / 400)
    assert a.record["lesions_by_region"] == {"chest/ribs": 1}


@pytest.mark.parametrize(("chest", "kidney"), [(0.6, 0.9), (0.9, 0.6)])
def test_a_lesion_wholly_inside_the_kidney_is_kidney_uptake_whatever_the_scores(chest, kidney):
    inst = make(
        (CHEST, chest, box(0, 20, 20, 40)),
        (KIDNEY, kidney, box(10, 16, 24, 30)),
        (LESION, 0.9, box(11, 13, 25, 28)),
    )
    record = analyse_scan(inst, None, TAX).record
    assert record["abnormal"] is False and record["bsi"] == 0.0
    assert record["lesions_by_region"] == {"kidney": 1}
    assert record["lesion_pixels_in_decoys"] == 6


def test_a_lesion_mostly_in_the_kidney_but_touching_the_spine_is_abnormal():
    # before: 20 px in the kidney, 8 in the spine -> "No abnormal uptake" beside BSI 1.66 %
    items = [
        (SPINE, 0.9, box(0, 20, 8, 10)),
        (KIDNEY, 0.9, box(0, 20, 10, 16)),
        (LESION, 0.9, box(6, 10, 8, 15)),  # 4 rows x (2 spine + 5 kidney) = 8 + 20
    ]
    record = analyse_scan(make(*items), None, TAX).record
    assert record["abnormal"] is True and record["burden_group"] == "few"
    assert record["bsi"] > 0
    css, sentence = finding_text(ok(record), TAX)
    assert css == "abnormal" and "spine" in sentence


def test_sites_name_every_region_the_table_marks_as_involved():
    # before: a lesion over spine and pelvis named only the spine in the sites sentence
    items = [
        (SPINE, 0.9, box(0, 10, 8, 12)),
        (PELVIS, 0.9, box(10, 20, 4, 16)),
        (LESION, 0.9, box(7, 11, 9, 11)),  # 6 px spine, 2 px pelvis
    ]
    record = ok(analyse_scan(make(*items), None, TAX).record)
    involved = {r["report_name"] for r in record["regions"] if r["involved"]}
    assert involved == {"spine", "pelvis"}
    assert set(lesion_sites(record, TAX)) == involved
    assert record["lesions_by_region"] == {"spine": 1}


# -- combining the views ------------------------------------------------------------------


def test_union_rule_counts_a_lesion_seen_in_one_view_in_full():
    # the mean rule halves it: (12/80 + 0) / 2; union takes each lesion in its best view
    items = [*spines(), (LESION, 0.9, box(2, 5, 8, 12))]
    mean = analyse_scan(make(*items), None, TAX).record
    union = analyse_scan(make(*items), None, TAX, combine="union").record
    spine = {r["combine"]: r for r in (mean, union)}
    assert next(r for r in spine["mean"]["regions"] if r["bone"] == "spine")[
        "involvement"
    ] == pytest.approx(12 / 80 / 2)
    assert next(r for r in spine["union"]["regions"] if r["bone"] == "spine")[
        "involvement"
    ] == pytest.approx(12 / 80)


def test_union_rule_takes_a_matched_lesion_once_from_its_larger_view():
    items = [*spines(), (LESION, 0.9, box(2, 5, 8, 12)), (LESION, 0.9, box(2, 4, 28, 32))]
    record = analyse_scan(make(*items), None, TAX, combine="union").record
    spine = next(r for r in record["regions"] if r["bone"] == "spine")
    assert spine["involvement"] == pytest.approx(12 / 80)  # max(12/80, 8/80), not the sum


def test_a_region_found_in_one_view_is_flagged():
    # before: nothing said that the spine's involvement came from the anterior view alone
    items = [(SPINE, 0.9, box(0, 20, 8, 12)), (LESION, 0.9, box(2, 4, 9, 11))]
    record = analyse_scan(make(*items), None, TAX).record
    spine = next(r for r in record["regions"] if r["bone"] == "spine")
    assert spine["assessed"] == "one view"
    assert spine["involvement"] == pytest.approx(4 / 80)


def test_a_region_found_in_neither_view_is_not_assessed_rather_than_zero():
    # before: the skull, found in neither view, had involvement 0.0 and BSI 0.0
    record = analyse_scan(make(*spines()), None, TAX).record
    skull = next(r for r in record["regions"] if r["bone"] == "skull")
    assert skull["assessed"] == "not assessed"
    assert skull["involvement"] is None and skull["bsi"] is None
    assert record["bsi_coverage"] == pytest.approx(8.3)
    html = scan_report_html(ok(record), TAX)
    assert "not assessed" in html


def test_no_region_in_either_view_gives_no_bsi():
    record = analyse_scan(make((LESION, 0.9, box(2, 4, 9, 11))), None, TAX).record
    assert record["bsi"] is None and record["bsi_coverage"] == 0.0


# -- failures are not zeros ---------------------------------------------------------------


def test_a_failed_scan_has_no_indices_in_its_record_or_the_csv():
    # before: BSI 0.0, burden "none", abnormal False: indistinguishable from a healthy scan
    record = scan_record("k1", ["sha256:00"], {}, error="predict: RuntimeError: boom")
    assert record["status"] == "failed"
    for key in ("bsi", "bstbi", "lesion_count", "burden_group", "abnormal"):
        assert record[key] is None, key
    healthy = analyse_scan(make(*spines()), None, TAX).record
    rows = summary_csv([scan_record("k0", [], {}, analysis=healthy), record]).splitlines()
    header = rows[0].split(",")
    failed = dict(zip(header, rows[2].split(","), strict=True))
    assert failed["status"] == "failed"
    assert failed["bsi"] == "" and failed["abnormal"] == "" and failed["burden_group"] == ""


# -- presentation -------------------------------------------------------------------------


def test_report_shows_bsi_to_two_decimals_and_the_coverage():
    items = [*spines(), (LESION, 0.9, box(2, 5, 8, 12))]
    record = ok(analyse_scan(make(*items), np.ones((H, W), np.float32), TAX).record)
    page = scan_report_html(record, TAX)
    bsi = record["bsi"]  # 8.3 * 0.075 = 0.6225
    assert f"{bsi:.2f}" in page and f"{bsi:.3f}" not in page
    assert "cover 8.3 % of skeletal mass" in page
    assert "BSTBI anterior" in page and "BSTBI posterior" in page
