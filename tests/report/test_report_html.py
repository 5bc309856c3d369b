import html
import re

import cv2
import pytest

from bsi_d2.report import (
    AID_LINE,
    NORMAL_FINDING,
    plot_bsi_agreement,
    write_evaluation_page,
    write_index,
    write_scan_report,
)
from bsi_d2.report.html import finding_text, lesion_sites


def record(**changes) -> dict:
    base = {
        "key": "a3f9c2d1e0",
        "status": "ok",
        "source": ["/data/DOE^JOHN/IM0001.dcm"],
        "model": {
            "config": "configs/leaf.yaml",
            "weights": "model_final.pth",
            "engine": "torchvision",
        },
        "bsi": 0.0,
        "bsi_coverage": 51.8,
        "bstbi": 0.0,
        "bstbi_anterior": 0.0,
        "bstbi_posterior": 0.0,
        "bstbi_notes": [],
        "lesion_count": 0,
        "lesion_instances": 0,
        "views_matched": True,
        "burden_group": "none",
        "abnormal": False,
        "sites": [],
        "regions": [
            {
                "bone": b,
                "report_name": n,
                "weight": w,
                "assessed": "both views",
                "involvement_anterior": 0.0,
                "involvement_posterior": 0.0,
                "involvement": 0.0,
                "bsi": 0.0,
                "involved": False,
            }
            for b, n, w in [
                ("skull", "skull", 18.4),
                ("spine", "spine", 8.3),
                ("chest", "chest/ribs", 8.7),
                ("pelvis", "pelvis", 7.5),
                ("femurs", "femur", 8.9),
            ]
        ],
        "lesions_by_region": {},
        "lesion_pixels_outside": 0,
        "lesion_pixels_in_decoys": 0,
        "overlay": "overlay.png",
        "error": None,
    }
    base.update(changes)
    return base


def abnormal(n=3, sites=None, by_region=None, **changes):
    regions = record()["regions"]
    regions[1].update(
        involvement_anterior=0.04,
        involvement_posterior=0.02,
        involvement=0.03,
        bsi=0.249,
        involved=True,
    )
    return record(
        abnormal=True,
        lesion_count=n,
        lesion_instances=n + 1,
        sites=["pelvis", "kidney", "spine", "skull", "other"] if sites is None else sites,
        bsi=0.249,
        bstbi=0.0123,
        burden_group="few",
        regions=regions,
        lesions_by_region=by_region
        or {"pelvis": 1, "kidney": 2, "spine": 1, "skull": 1, "outside": 1},
        lesion_pixels_outside=17,
        lesion_pixels_in_decoys=9,
        **changes,
    )


def text_of(page: str) -> str:
    """Visible text, entities decoded, whitespace collapsed."""
    body = re.sub(r"<style.*?</style>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_normal_report_wording(tmp_path):
    path = write_scan_report(tmp_path, record())
    assert path == tmp_path / "report.html"
    page = path.read_text()
    assert NORMAL_FINDING in page
    assert AID_LINE in text_of(page)
    assert "Multiple lesions" not in page and "single lesion" not in page
    assert "abnormal uptake flagged" not in page.lower()
    assert 'src="overlay.png"' in page


def test_abnormal_report_names_multiple_lesions_and_sites_in_order(tmp_path):
    page = write_scan_report(tmp_path, abnormal()).read_text()
    text = text_of(page)
    assert NORMAL_FINDING not in page
    # seed 002 order; kidney is a decoy, never a site
    assert (
        "Multiple lesions (3) with abnormal uptake were detected by the model in the "
        "skull, spine, pelvis and other parts."
    ) in text
    assert "0.25 % of skeletal mass" in text and "0.249" not in text
    assert "0.0123" in text and "few" in text
    assert "3 (4 outlined in the views, matched across views)" in text
    assert "Outside every skeletal region 17" in text
    assert "Inside kidney / other decoy regions 9" in text
    assert AID_LINE in text


def test_single_lesion_uses_matched_count():
    css, sentence = finding_text(abnormal(n=1, sites=["spine"], by_region={"spine": 1}))
    assert css == "abnormal"
    assert sentence.startswith(
        "A single lesion with abnormal uptake was detected by the model in the spine."
    )


def test_lesion_sites_order():
    assert lesion_sites(abnormal(sites=["femur", "other", "chest/ribs", "bladder"])) == [
        "chest/ribs",
        "femur",
        "other",
    ]


def test_no_identity_and_everything_escaped(tmp_path):
    rec = abnormal(key="<script>alert(1)</script>", patient_name="DOE^JOHN", PatientID="12345678")
    page = write_scan_report(tmp_path, rec).read_text()
    assert "DOE" not in page and "12345678" not in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no external assets


def test_failed_record_states_the_reason(tmp_path):
    rec = {
        "key": "c0ffee",
        "status": "failed",
        "source": ["x.dcm"],
        "error": "x.dcm: spot view, not a whole-body scan",
    }
    text = text_of(write_scan_report(tmp_path, rec).read_text())
    assert "failed" in text and "spot view, not a whole-body scan" in text
    assert NORMAL_FINDING not in text and AID_LINE in text


def test_index_links_reports_and_lists_failures(tmp_path):
    records = [
        abnormal(key="k1"),
        record(key="k2"),
        {"key": "k3", "status": "failed", "error": "broken.dcm: truncated pixel data"},
    ]
    page = write_index(tmp_path, records).read_text()
    assert 'href="k1/report.html"' in page and 'href="k2/report.html"' in page
    assert 'href="k3/report.html"' not in page
    text = text_of(page)
    assert "truncated pixel data" in text
    assert "abnormal uptake flagged" in text and "no abnormal uptake detected" in text
    assert "2 scan(s) analysed, 1 with abnormal uptake flagged, 1 failed or not assessed" in text
    assert AID_LINE in text


EVALUATION = {
    "coco": {
        "segm": {"AP": 0.5, "AP50": 0.75, "AP75": 0.4, "per_class": {"skull": 0.9, "pelvis": None}}
    },
    "pixel": {
        "per_class": {
            "skull": {
                "precision": 0.9722,
                "sensitivity": 0.9443,
                "f1": 0.958,
                "tp": 1,
                "fp": 0,
                "fn": 0,
                "kind": "region",
            },
            "kidney": {
                "precision": 0.8613,
                "sensitivity": 0.7923,
                "f1": 0.825,
                "tp": 1,
                "fp": 0,
                "fn": 0,
                "kind": "decoy",
            },
        },
        "mean": {"precision": 0.9, "sensitivity": 0.8, "f1": 0.85, "n_classes": 2},
        "mean_without_decoys": {
            "precision": 0.9722,
            "sensitivity": 0.9443,
            "f1": 0.958,
            "n_classes": 1,
        },
        "skeleton": {"precision": 0.9722, "sensitivity": 0.9443, "f1": 0.958},
    },
    "lesion": {"dice_pooled": 0.7387, "dice_mean_per_image": 0.7, "n_images_with_lesions": 4},
    "burden": {
        "n": 4,
        "count_mean_absolute_error": 0.5,
        "count_mean_signed_error": 0.0,
        "count_exact_agreement": 0.5,
        "group_agreement": 0.5,
        "group_kappa": 3 / 11,
    },
    "scan": {
        "sensitivity": 0.926,
        "specificity": 0.855,
        "accuracy": 0.886,
        "auc": 0.9263,
        "n_pos": 54,
        "n_neg": 69,
    },
    "n_images": 123,
    "score_thresh": 0.5,
    "taxonomy": "bsi-default",
}


def test_evaluation_page_with_plots(tmp_path):
    pairs = [("a", 1.0, 1.1), ("b", 2.0, 1.8), ("c", 0.5, 0.4), ("d", 3.2, 3.0)]
    page = write_evaluation_page(tmp_path, EVALUATION, pairs).read_text()
    text = text_of(page)
    assert "97.22 %" in text and "79.23 %" in text
    assert "Average (w/o decoys)" in text and "Skeleton (pooled)" in text
    assert "73.87 %" in text and "0.926" in text
    assert 'src="bsi_scatter.png"' in page and 'src="bsi_bland_altman.png"' in page
    assert "Burden group Cohen's kappa 0.273" in text and "Count error, mean absolute 0.50" in text
    for name in ("bsi_scatter.png", "bsi_bland_altman.png"):
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and image.std() > 5
    assert AID_LINE in text


def test_evaluation_page_without_reference_bsi(tmp_path):
    failed = [{"file_name": "0007.png", "error": "0007.png: cannot read image"}]
    page = write_evaluation_page(tmp_path, {**EVALUATION, "failed": failed}, []).read_text()
    assert "No reference BSI values were given." in page
    assert "Images not scored (1)" in page and "0007.png: cannot read image" in page
    assert not (tmp_path / "bsi_scatter.png").exists()


def test_plot_bsi_agreement_returns_both_paths(tmp_path):
    scatter, ba = plot_bsi_agreement([("a", 1.0, 1.0), ("b", 2.0, 2.5)], tmp_path / "plots")
    assert scatter.name == "bsi_scatter.png" and ba.name == "bsi_bland_altman.png"
    assert scatter.is_file() and ba.is_file()
    with pytest.raises(ValueError):
        plot_bsi_agreement([], tmp_path)


def test_evaluation_page_lesion_detection_block_and_froc_plot(tmp_path):
    detection = {
        "n_scans": 3,
        "n_lesions": 3,
        "matching_rule": "hit: mask IoU >= 0.1 or predicted centroid inside",
        "froc": [
            {"threshold": 0.9, "sensitivity": 1 / 3, "fp_per_scan": 0.0},
            {"threshold": 0.6, "sensitivity": 1 / 3, "fp_per_scan": 1.0},
            {"threshold": 0.3, "sensitivity": 1.0, "fp_per_scan": 1.0},
        ],
        "sensitivity_at_fp": {"0.25": 1 / 3, "0.5": 1 / 3, "1": 1.0, "2": 1.0, "4": 1.0},
        "froc_score": 11 / 15,
        "operating_thresh": 0.5,
        "sensitivity": 1 / 3,
        "precision": 0.25,
        "fp_per_scan": 1.0,
        "count_mean_absolute_error": 1 / 3,
        "n_predicted": 4,
    }
    page = write_evaluation_page(tmp_path, {**EVALUATION, "lesion_detection": detection}, [])
    text = text_of(page.read_text())
    assert "Lesion detection" in text and "FROC score (mean of the five) 0.733" in text
    assert "Sensitivity at 0.25 FP per scan 33.33 %" in text
    assert "Sensitivity at 1 FP per scan 100.00 %" in text
    assert "Precision at score ≥ 0.5 25.00 %" in text and "Lesions predicted / true 4 / 3" in text
    assert "Matching: hit: mask IoU >= 0.1 or predicted centroid inside." in text
    assert 'src="lesion_froc.png"' in page.read_text()
    image = cv2.imread(str(tmp_path / "lesion_froc.png"))
    assert image is not None and image.std() > 5


def test_evaluation_page_without_lesion_detection_or_lesions(tmp_path):
    assert "Lesion detection" not in write_evaluation_page(tmp_path, EVALUATION, []).read_text()
    no_lesions = {"n_scans": 2, "n_lesions": 0, "froc": [], "sensitivity_at_fp": {}}
    page = write_evaluation_page(tmp_path, {**EVALUATION, "lesion_detection": no_lesions}, [])
    assert "Lesion detection" in page.read_text()
    assert not (tmp_path / "lesion_froc.png").exists()


def test_report_names_the_study_by_its_pseudonyms_and_kept_date_only(tmp_path):
    linked = record(
        study_key="s0123456789abcdef",
        patient_key="pt0123456789abcdef",
        study_date="2024-03",
        study_date_kind="month",
    )
    text = text_of(write_scan_report(tmp_path / "a", linked).read_text())
    assert "pt0123456789abcdef" in text and "s0123456789abcdef" in text
    assert "2024-03 (month)" in text
    text = text_of(write_scan_report(tmp_path / "b", record()).read_text())
    assert "Patient (pseudonym)" not in text and "Study date" not in text
