"""``bsi-d2 evaluate --predictions OUT``: a predict output folder against a reference CSV or COCO
ground truth, on bsi.json records written by hand."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from bsi_d2.cli import main as cli_main
from bsi_d2.inference.outputs import (
    PREDICTIONS_FILE,
    RECORD_FILE,
    SCANS_DIR,
    predictions_document,
    scan_record,
)
from bsi_d2.io.pseudonym import file_digest
from bsi_d2.report.html import AID_LINE
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_to_rle

MODEL = {"engine": "test"}


def key(i: int) -> str:
    return f"c{i:016x}"


def study(i: int) -> str:
    return f"s{i:016x}"


def write_record(out, record) -> dict:
    folder = out / SCANS_DIR / record["key"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_FILE).write_text(json.dumps(record), encoding="utf-8")
    return record


def make_record(i, source, values, qc=None, study_of=None) -> dict:
    """Scan ``i``'s record of study ``study_of`` (default ``i``); values: (bsi, count, group,
    abnormal)."""
    bsi, count, group, abnormal = values
    analysis = {"bsi": bsi, "lesion_count": count, "burden_group": group, "abnormal": abnormal}
    record = scan_record(key(i), source, MODEL, analysis, qc=qc)
    record["study_key"] = study(study_of or i)  # the reader's study link
    return record


# scan i: (predicted bsi, count, group, abnormal)
PREDICTED = {
    1: (0.0, 0, "none", False),
    2: (0.8, 2, "few", True),
    3: (2.5, 5, "medium", True),
    4: (0.3, 1, "few", True),
    5: (4.0, 8, "extensive", True),
    7: (1.0, 2, "few", True),  # no reference row
}
# reference rows: (key cell, bsi, lesion_count, burden_group, abnormal)
REFERENCE = [
    (study(1), "0.1", "0", "none", "no"),
    (study(2), "1.0", "3", "few", "yes"),
    (key(3), "2.0", "", "medium", "1"),  # by content key; lesion count missing
    (study(4), "0", "0", "none", "false"),
    (study(5), "3.5", "9", "extensive", "TRUE"),
    (study(6), "1.5", "4", "medium", "yes"),  # qc_failed scan
    ("s00000000000000ff", "2.0", "3", "few", "yes"),  # no such scan
]


def predict_folder(tmp_path):
    out = tmp_path / "out"
    for i, values in PREDICTED.items():
        write_record(out, make_record(i, [f"sha256:{i:016x}"], values))
    qc = {"status": "failed", "failed": ["too few counts"], "warnings": []}
    write_record(out, make_record(6, ["sha256:6"], (1.2, 3, "few", True), qc=qc))
    return out


def write_reference(
    tmp_path, rows=REFERENCE, header="study_key,bsi,lesion_count,burden_group,abnormal"
):
    path = tmp_path / "reference.csv"
    path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_agreement_with_a_reference_csv(tmp_path, capsys):
    out, ref = predict_folder(tmp_path), write_reference(tmp_path)
    ev = tmp_path / "ev"
    argv = ["evaluate", "--predictions", str(out), "--reference", str(ref), "--out", str(ev)]
    assert cli_main([*argv, "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "not assessed by the model (1)" in printed and key(6) in printed
    assert "reference keys without a scan (1): s00000000000000ff" in printed

    doc = json.loads((ev / "agreement.json").read_text())
    assert doc["inputs"] == {"predictions": "out", "reference": "reference.csv", "gt": None}
    assert (doc["n_scans"], doc["n_reference"], doc["n_matched"], doc["n_assessed"]) == (7, 7, 6, 5)
    assert doc["unmatched_reference"] == [{"key": "s00000000000000ff", "line": 8}]
    assert doc["unmatched_predictions"] == [{"key": key(7), "study_key": study(7), "status": "ok"}]
    (na,) = doc["not_assessed"]
    assert (na["key"], na["status"], na["reference_key"]) == (key(6), "qc_failed", study(6))
    assert "quality control" in na["reason"]

    # scans 1-5 assessed and matched; the qc_failed scan's reference is not a pair
    ref_bsi = np.array([0.1, 1.0, 2.0, 0.0, 3.5])
    pred_bsi = np.array([PREDICTED[i][0] for i in range(1, 6)])
    bsi = doc["bsi"]
    assert bsi["n"] == 5 and bsi["n_reference_missing"] == 0
    assert bsi["correlation"]["pearson_r"] == pytest.approx(stats.pearsonr(pred_bsi, ref_bsi)[0])
    assert bsi["correlation"]["spearman_rho"] == pytest.approx(
        stats.spearmanr(pred_bsi, ref_bsi)[0]
    )
    diff = pred_bsi - ref_bsi
    ba = bsi["bland_altman"]
    assert ba["bias"] == pytest.approx(diff.mean())
    assert ba["loa_upper"] == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1))
    half = stats.t.ppf(0.975, 4) * diff.std(ddof=1) / np.sqrt(5)
    assert ba["bias_ci_high"] == pytest.approx(diff.mean() + half)
    assert bsi["icc"]["icc3_1"] is not None

    counts = doc["lesion_count"]  # scan 3's cell is empty: missing for the count only
    assert counts["n"] == 4 and counts["n_reference_missing"] == 1
    pred_counts, ref_counts = np.array([0, 2, 1, 8]), np.array([0, 3, 0, 9])
    assert counts["mean_absolute_error"] == pytest.approx(np.abs(pred_counts - ref_counts).mean())
    assert counts["spearman_rho"] == pytest.approx(stats.spearmanr(pred_counts, ref_counts)[0])

    groups = doc["burden_group"]  # agree on 1, 2, 3, 5; scan 4: few vs none
    assert groups["n"] == 5 and groups["agreement"] == pytest.approx(4 / 5)
    assert groups["confusion"]["none"] == {"none": 1, "few": 1, "medium": 0, "extensive": 0}
    assert groups["kappa_ci_low"] < groups["kappa"] < groups["kappa_ci_high"]

    abnormal = doc["abnormal"]  # reference abnormal: 2, 3, 5; predicted: 2, 3, 4, 5
    assert (abnormal["tp"], abnormal["fp"], abnormal["tn"], abnormal["fn"]) == (3, 1, 1, 0)
    assert abnormal["sensitivity"] == 1.0 and abnormal["specificity"] == 0.5
    truth = [False, True, True, False, True]
    assert abnormal["auc"] == pytest.approx(
        stats.mannwhitneyu(pred_bsi[truth], pred_bsi[~np.array(truth)]).statistic / 6
    )
    assert abnormal["auc_n"] == 5 and abnormal["roc"]["fpr"][-1] == 1.0

    with open(ev / "agreement_pairs.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["key"] for r in rows] == [key(i) for i in range(1, 7)]
    qc_row = rows[-1]
    assert qc_row["status"] == "qc_failed" and qc_row["predicted_bsi"] == ""
    assert qc_row["reference_bsi"] == "1.5"
    assert rows[0]["reference_abnormal"] == "0" and rows[1]["predicted_abnormal"] == "1"

    page = (ev / "agreement.html").read_text(encoding="utf-8")
    assert page.count("<img ") == 3 and page.count('src="data:image/png;base64,') == 3
    assert AID_LINE in page
    assert "Not assessed by the model (1)" in page and "s00000000000000ff" in page


def test_summary_without_out_and_abnormal_scored_by_lesion_count(tmp_path, capsys):
    out, ref = predict_folder(tmp_path), write_reference(tmp_path)
    argv = ["evaluate", "--predictions", str(out / SCANS_DIR), "--reference", str(ref)]
    assert cli_main([*argv, "--abnormal-score", "lesion_count", "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "BSI (5 pairs): Pearson r" in printed
    assert "ranked by lesion_count" in printed
    assert not (tmp_path / "agreement.json").exists()


def test_reference_key_column_and_keep_identity_paths(tmp_path):
    out = tmp_path / "out"
    sources = {1: "/archive/DOE^JOHN/scan_a.dcm", 2: "/archive/ROE^JANE/scan_b.png"}
    for i in (1, 2, 3):
        write_record(out, make_record(i, [sources.get(i, f"sha256:{i:016x}")], PREDICTED[i]))
    rows = [("x", "scan_a", "0.2"), ("y", "scan_b.png", "0.5"), ("z", study(3), "2.0")]
    ref = tmp_path / "reference.csv"
    ref.write_text("id;name;BSI\n" + "\n".join(";".join(r) for r in rows) + "\n")
    ev = tmp_path / "ev"
    argv = ["evaluate", "--predictions", str(out), "--reference", str(ref), "--out", str(ev)]
    argv += ["--reference-key", "name", "--bootstrap", "20"]
    assert cli_main(argv) == 0
    without = json.loads((ev / "agreement.json").read_text())
    assert without["n_matched"] == 1
    assert [u["key"] for u in without["unmatched_reference"]] == ["scan_a", "scan_b.png"]
    assert cli_main([*argv, "--keep-identity"]) == 0
    kept = json.loads((ev / "agreement.json").read_text())
    assert kept["n_matched"] == 3 and kept["unmatched_reference"] == []
    assert kept["settings"]["key_column"] == "name"


BAD = {
    "missing file": (None, "not found"),
    "no key column": ("patient,bsi\np1,1.0\n", "no key column"),
    "non-numeric bsi": ("study_key,bsi\ns1,1.0\ns2,abc\n", "line 3, column 'bsi': 'abc' is not a"),
    "bad abnormal": ("key,abnormal\nc1,maybe\n", "line 2, column 'abnormal'"),
    "unknown burden group": ("key,burden_group\nc1,lots\n", "'lots' is not one of none"),
    "no value column": ("study_key,notes\ns1,x\n", "no value column"),
    "repeated key": ("key,bsi\nc1,1\nc1,2\n", "line 3: key 'c1' repeats line 2"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_a_bad_reference_csv_exits_2_naming_the_file(case, tmp_path, caplog):
    out = predict_folder(tmp_path)
    text, message = BAD[case]
    ref = tmp_path / "bad_reference.csv"
    if text is not None:
        ref.write_text(text, encoding="utf-8")
    rc = cli_main(["evaluate", "--predictions", str(out), "--reference", str(ref)])
    assert rc == 2
    assert "bad_reference.csv" in caplog.text and message in caplog.text


def test_a_key_naming_two_scans_is_an_error(tmp_path, caplog):
    out = predict_folder(tmp_path)
    write_record(out, make_record(9, ["sha256:9"], (0.5, 1, "few", True), study_of=2))
    ref = write_reference(tmp_path)
    assert cli_main(["evaluate", "--predictions", str(out), "--reference", str(ref)]) == 2
    assert f"key '{study(2)}' matches 2 scans" in caplog.text and key(9) in caplog.text


def test_a_folder_needs_gt_or_reference(tmp_path, caplog):
    out = predict_folder(tmp_path)
    assert cli_main(["evaluate", "--predictions", str(out)]) == 2
    assert "--gt COCO.json and/or --reference" in caplog.text
    assert cli_main(["evaluate", "--predictions", str(tmp_path / "empty")]) == 2


# -- COCO ground truth against the scans' predictions.json ------------------------------------

H, W = 24, 32
SKULL, SPINE, LESION = 1, 2, 11


def box(r0, r1, c0, c1):
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


SCENES = {
    1: [(SKULL, box(0, 6, 4, 12)), (SPINE, box(6, 20, 6, 10)), (LESION, box(8, 11, 6, 9))],
    2: [(SKULL, box(1, 7, 3, 11)), (SPINE, box(7, 21, 7, 11))],
    3: [(SKULL, box(0, 5, 5, 13))],
}


def instances(objs) -> Instances:
    return Instances(
        H,
        W,
        np.array([[0, 0, 1, 1]] * len(objs), np.float32),
        np.full(len(objs), 0.9, np.float32),
        np.array([c for c, _ in objs], np.int64),
        np.stack([m for _, m in objs]),
    )


def coco_folder(tmp_path, taxonomy, with_predictions=True):
    """root/images/<id>.png and root/annotations/gt.json; a predict folder whose scans 1 and 2
    are images 1 and 2 (by content), perfect predictions, image 3 without a scan."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    anns, images = [], []
    for image_id, objs in SCENES.items():
        Image.fromarray(rng.integers(0, 255, (H, W), np.uint8)).save(
            root / "images" / f"{image_id}.png"
        )
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        anns += [{"image_id": image_id, "category_id": c, "segmentation": mask_to_rle(m)}
                 for c, m in objs]  # fmt: skip
    gt = root / "annotations" / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns}))
    out = tmp_path / "out"
    for image_id in (1, 2):
        digest = file_digest(root / "images" / f"{image_id}.png")[:16]
        write_record(out, make_record(image_id, [f"sha256:{digest}"], (0.5, 1, "few", True)))
        if with_predictions:
            pred = instances(SCENES[image_id])
            doc = predictions_document(key(image_id), pred, taxonomy, ["anterior"] * len(pred),
                                       np.ones(len(pred), bool))  # fmt: skip
            (out / SCANS_DIR / key(image_id) / PREDICTIONS_FILE).write_text(json.dumps(doc))
    return gt, out


def test_gt_against_a_predict_folder(tmp_path, taxonomy, capsys):
    gt, out = coco_folder(tmp_path, taxonomy)
    ev = tmp_path / "ev"
    assert cli_main(["evaluate", "--gt", str(gt), "--predictions", str(out), "--out", str(ev)]) == 0
    assert "COCO images without a scan (1): 3.png" in capsys.readouterr().out
    evaluation = json.loads((ev / "evaluation.json").read_text())
    assert evaluation["n_images"] == 2  # image 3 has no scan: listed, not scored as empty
    assert evaluation["coco"]["segm"]["AP"] == pytest.approx(1.0)
    assert evaluation["lesion"]["dice_pooled"] == 1.0
    folder = evaluation["predict_folder"]
    assert folder["n_scored"] == 2 and folder["n_gt_images"] == 3
    assert folder["unmatched_images"] == [
        {"id": 3, "file_name": "3.png", "reason": "no scan of this file in the predictions"}
    ]
    assert folder["unmatched_predictions"] == [] and folder["not_assessed"] == []
    assert (ev / "coco_segm_results.json").is_file()


def test_gt_needs_the_scans_predictions(tmp_path, taxonomy, caplog):
    gt, out = coco_folder(tmp_path, taxonomy, with_predictions=False)
    assert cli_main(["evaluate", "--gt", str(gt), "--predictions", str(out)]) == 2
    assert PREDICTIONS_FILE in caplog.text and "--outputs" in caplog.text
