"""The benign hot-spot class (issue #18): the built-in ``benign`` taxonomy, benign instances that
add nothing to the BSI, phantoms that label their look-alikes, the report's separate list and
the lesion-level benign-versus-malignant figures, on hand-built instances with known answers."""

import json

import numpy as np
import pytest

from bsi_d2 import cli
from bsi_d2.evaluation import EvaluationResult, evaluate_dataset
from bsi_d2.evaluation.benign import BenignMalignantAccumulator
from bsi_d2.phantom import generate_phantom, write_phantoms
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.report.html import AID_LINE, scan_report_html
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_to_bbox, mask_to_rle, rle_to_mask
from bsi_d2.taxonomy import load_taxonomy

DEFAULT = load_taxonomy()
BENIGN = load_taxonomy("benign")
H, W = 40, 80  # a tiny merged scan: anterior columns 0-39, posterior 40-79


def box(r0, r1, c0, c1):
    mask = np.zeros((H, W), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def scan(*items):
    """Instances from (class name, mask, score) triples."""
    ids = [BENIGN.by_name(name).id for name, _, _ in items]
    return Instances.from_masks(
        H, W, ids, [m for _, m, _ in items], [float(s) for _, _, s in items]
    )


# -- taxonomy -------------------------------------------------------------------------------


def test_benign_taxonomy_is_the_default_plus_a_benign_decoy_with_the_next_free_id():
    assert [c for c in BENIGN.classes if c.id <= 12] == list(DEFAULT.classes)
    benign = BENIGN.benign_class
    assert (benign.id, benign.name, benign.kind) == (13, "benign", "decoy")
    assert max(DEFAULT.ids) + 1 == benign.id
    assert benign.color not in {c.color for c in DEFAULT.classes}
    for label in ("benign", "Benign_Uptake", "degenerative", "hard_negative"):
        assert BENIGN.resolve_label(label) is benign
    assert BENIGN.weights == DEFAULT.weights and BENIGN.flip_map[13] == 13
    assert BENIGN.benign_ids == [13] and 13 in BENIGN.decoy_ids
    assert DEFAULT.benign_class is None and DEFAULT.benign_ids == []


def test_the_config_key_selects_the_benign_taxonomy_by_name():
    from bsi_d2.config import setup_cfg

    cfg = setup_cfg(None, ["BSI.TAXONOMY", "benign"])
    assert load_taxonomy(cfg.BSI.TAXONOMY).benign_class.id == 13
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 13


# -- the BSI ----------------------------------------------------------------------------------

SPINE = ("spine", box(5, 35, 10, 20), 0.99)  # 300 pixels, anterior
SPINE_P = ("spine", box(5, 35, 60, 70), 0.99)  # its posterior view
LESION = ("lesion", box(10, 14, 12, 16), 0.9)  # 16 pixels on the spine


def test_benign_instances_add_nothing_to_the_bsi():
    plain = analyse_scan(scan(SPINE, SPINE_P, LESION), None, BENIGN)
    benign = ("benign", box(20, 30, 11, 19), 0.8)  # on the spine, away from the lesion
    outside = ("benign", box(2, 6, 30, 36), 0.7)  # outside every region
    with_benign = analyse_scan(scan(SPINE, SPINE_P, LESION, benign, outside), None, BENIGN)
    assert plain.bsi.bsi == pytest.approx(8.3 * 16 / 300 / 2)  # mean of the views
    assert with_benign.bsi.bsi == plain.bsi.bsi
    assert with_benign.record["lesion_count"] == plain.record["lesion_count"] == 1
    assert with_benign.record["lesion_pixels_counted"] == 16
    block = with_benign.record["benign_hot_spots"]
    assert block["count"] == 2 and block["by_site"] == {"spine": 1, "other": 1}
    empty = {"count": 0, "instances": 0, "sites": [], "by_site": {}, "hot_spots": []}
    assert plain.record["benign_hot_spots"] == {**block, **empty}


def test_a_lesion_wholly_inside_a_benign_hot_spot_is_decoy_uptake_one_reaching_past_it_counts():
    benign = ("benign", box(8, 16, 10, 20), 0.8)  # covers the lesion
    inside = analyse_scan(scan(SPINE, SPINE_P, LESION, benign), None, BENIGN)
    assert inside.bsi.bsi == 0.0 and inside.record["lesions_in_decoys"] == 1
    assert inside.record["lesions"][0]["site_name"] == "benign hot spot"
    half = ("benign", box(8, 16, 10, 14), 0.8)  # covers half of it
    partly = analyse_scan(scan(SPINE, SPINE_P, LESION, half), None, BENIGN)
    assert partly.record["lesion_pixels_counted"] == 16  # bone pixels count, as with a kidney


def test_a_benign_hot_spot_seen_in_both_views_is_one():
    front = ("benign", box(20, 26, 12, 18), 0.8)
    back = ("benign", box(20, 26, 62, 68), 0.8)  # the mirror of the front one
    record = analyse_scan(scan(SPINE, SPINE_P, front, back), None, BENIGN).record
    assert record["benign_hot_spots"]["count"] == 1
    assert record["benign_hot_spots"]["instances"] == 2
    assert record["benign_hot_spots"]["hot_spots"][0]["views"] == ["anterior", "posterior"]


def test_without_a_benign_class_there_is_no_benign_list():
    ids = [DEFAULT.by_name("spine").id, DEFAULT.by_name("lesion").id]
    kept = Instances.from_masks(H, W, ids, [SPINE[1], LESION[1]], [0.9, 0.9])
    assert analyse_scan(kept, None, DEFAULT).record["benign_hot_spots"] is None


# -- phantoms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", ["standard", "hard"])
def test_label_benign_labels_the_lookalikes_and_changes_nothing_else(difficulty):
    plain = generate_phantom(0, 3, difficulty=difficulty)
    labelled = generate_phantom(0, 3, difficulty=difficulty, taxonomy=BENIGN, label_benign=True)
    assert np.array_equal(plain.anterior, labelled.anterior)
    assert np.array_equal(plain.posterior, labelled.posterior)
    assert plain.identity == labelled.identity
    n = len(plain.truth["instances"])
    assert labelled.truth["instances"][:n] == plain.truth["instances"]
    assert {k: v for k, v in labelled.truth.items() if k != "instances"} == {
        k: v for k, v in plain.truth.items() if k != "instances"
    }
    added = labelled.truth["instances"][n:]
    assert added and {r["category_name"] for r in added} == {"benign"}
    assert labelled.shapes[: len(plain.shapes)] == plain.shapes
    masks = {r["category_name"]: [] for r in labelled.truth["instances"]}
    for r in labelled.truth["instances"]:
        masks[r["category_name"]].append(rle_to_mask(r["segmentation"]))
    benign = np.any(masks["benign"], axis=0)
    for name in ("lesion", "kidney", "bladder"):
        for other in masks.get(name, []):
            assert not (benign & other).any(), name
    # the benign outlines lie over uptake hotter than bone, which a plain phantom leaves unlabelled
    bone = np.any([m for c in BENIGN.region_classes for m in masks.get(c.name, [])], axis=0)
    counts = plain.merged.counts
    assert counts[benign].mean() > 1.2 * counts[bone & ~benign].mean()


def test_without_the_flag_a_benign_taxonomy_writes_the_default_files(tmp_path):
    write_phantoms(tmp_path / "default", 2, seed=5, workers=1)
    write_phantoms(tmp_path / "benign", 2, seed=5, workers=1, taxonomy="benign")
    for rel in ("labelme/phantom_0001.json", "truth/phantom_0001.json", "manifest.json"):
        assert (tmp_path / "default" / rel).read_bytes() == (tmp_path / "benign" / rel).read_bytes()


def test_label_benign_needs_a_benign_class_and_says_so(tmp_path, caplog):
    with pytest.raises(ValueError, match="default.yaml.*benign"):
        generate_phantom(0, 0, taxonomy=DEFAULT, label_benign=True)
    with pytest.raises(ValueError, match="benign"):
        write_phantoms(tmp_path / "x", 1, taxonomy="default", label_benign=True)
    assert not (tmp_path / "x").exists()
    argv = ["phantom", "--scans", "1", "--out", str(tmp_path / "y"), "--label-benign",
            "--taxonomy", "default"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--label-benign" in caplog.text and "default.yaml" in caplog.text
    missing = tmp_path / "nope.yaml"
    assert cli.main([*argv[:-1], str(missing)]) == 2
    assert str(missing) in caplog.text


def test_cli_label_benign_writes_benign_labelme_shapes(tmp_path):
    out = tmp_path / "p"
    assert cli.main(["phantom", "--scans", "2", "--out", str(out), "--workers", "1",
                     "--label-benign"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["taxonomy"] == "bsi-benign" and "benign" in manifest["benign_instances"]
    labels = {
        s["label"]
        for i in (0, 1)
        for s in json.loads((out / "labelme" / f"phantom_{i:04d}.json").read_text())["shapes"]
    }
    assert "benign" in labels and "lesion" in labels


# -- the report -------------------------------------------------------------------------------


def record(**changes):
    base = {
        "key": "c0ffee", "status": "ok", "source": ["scan.dcm"], "model": {"engine": "replay"},
        "bsi": 0.0, "bsi_coverage": 55.1, "bstbi": None, "bstbi_notes": [], "lesion_count": 0,
        "lesion_instances": 0, "views_matched": True, "burden_group": "none", "abnormal": False,
        "sites": [], "regions": [], "lesions": [], "lesions_by_region": {}, "overlay": None,
    }  # fmt: skip
    return {**base, **changes}


def test_report_lists_the_benign_hot_spots_apart_as_the_models_judgement():
    benign = {"count": 3, "instances": 5, "sites": ["spine", "other", "chest/ribs"],
              "by_site": {"spine": 1, "other": 1, "chest/ribs": 1}, "hot_spots": []}  # fmt: skip
    page = scan_report_html(record(benign_hot_spots=benign), BENIGN)
    assert "Hot spots the model judges benign: 3 (spine 1, chest/ribs 1, other 1)" in page
    assert "not a diagnosis" in page and AID_LINE.replace("'", "&#x27;") in page
    assert "Hot spots judged benign" in page and "not counted in the BSI" in page
    assert "No abnormal uptake" in page  # benign hot spots do not make a scan abnormal
    for quiet in (record(), record(benign_hot_spots=None), record(benign_hot_spots={"count": 0})):
        assert "judges benign" not in scan_report_html(quiet, BENIGN)


def test_report_names_the_taxonomys_decoys_for_decoy_uptake():
    page = scan_report_html(record(lesions_in_decoys=2), BENIGN)
    assert "Uptake in kidney / bladder / benign hot spot" in page
    assert "Uptake in kidney / bladder<" in scan_report_html(record(lesions_in_decoys=2), DEFAULT)


# -- benign versus malignant, lesion by lesion -----------------------------------------------


def test_benign_malignant_figures_of_hand_built_calls():
    m1, m2, m3 = box(2, 8, 2, 8), box(2, 8, 20, 26), box(20, 26, 2, 8)
    b1, b2 = box(20, 26, 20, 26), box(30, 36, 30, 36)
    acc = BenignMalignantAccumulator()
    acc.add(
        [m1, m2, m3, b1, b2],
        [True, True, True, False, False],
        # m1 lesion 0.9; m2 benign 0.6; m3 lesion 0.7 and a weaker benign 0.55 (the lesion call
        # takes it: higher score); b1 benign 0.8 and a second, unmatched lesion call 0.6;
        # b2 lesion 0.65; a lesion call on nothing
        [m1, m2, m3, m3, b1, b1, b2, box(36, 40, 60, 64)],
        [True, False, True, False, False, True, True, True],
        [0.9, 0.6, 0.7, 0.55, 0.8, 0.6, 0.65, 0.95],
    )
    acc.add([box(2, 8, 2, 8)], [False], [], [], [])  # a benign hot spot not detected
    result = acc.result()
    assert (result["n_malignant"], result["n_benign"], result["n_not_detected"]) == (3, 3, 1)
    assert result["malignant_called_lesion"] == 2 and result["malignant_called_benign"] == 1
    assert result["benign_called_benign"] == 1 and result["benign_called_lesion"] == 1
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(1 / 2)
    # P(lesion): malignant 0.9, 0.4 (1 - 0.6), 0.7; benign 0.2 (1 - 0.8), 0.65
    # pairs malignant > benign: 0.9 > both, 0.4 > 0.2, 0.7 > both: 5 of 6
    assert result["auc"] == pytest.approx(5 / 6)
    assert result["lesion_fp_on_benign"] == 2  # b1's second call and b2's
    assert result["lesion_fp_on_benign_per_scan"] == pytest.approx(1.0)


def test_benign_malignant_figures_without_benign_truth_are_undefined():
    acc = BenignMalignantAccumulator()
    acc.add([box(2, 8, 2, 8)], [True], [box(2, 8, 2, 8)], [True], [0.9])
    result = acc.result()
    assert result["sensitivity"] == 1.0 and result["specificity"] is None
    assert result["auc"] is None and result["lesion_fp_on_benign_per_scan"] == 0.0
    with pytest.raises(ValueError, match="2 predicted masks with 1 classes"):
        acc.add([], [], [box(0, 2, 0, 2)] * 2, [True], [0.5, 0.5])


def test_a_scan_without_truth_hot_spots_counts_its_calls_as_nothing_matched():
    acc = BenignMalignantAccumulator()
    acc.add([], [], [box(2, 8, 2, 8)], [True], [0.9])  # a normal scan with one lesion call
    acc.add([], [], [], [], [])  # nothing at all
    result = acc.result()
    assert (result["n_malignant"], result["n_benign"], result["n_not_detected"]) == (0, 0, 0)
    assert result["lesion_fp_on_benign"] == 0


def coco(annotations):
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": BENIGN.by_name(name).id, "iscrowd": 0,
         "segmentation": mask_to_rle(mask), "bbox": mask_to_bbox(mask),
         "area": int(mask.sum())}
        for i, (name, mask) in enumerate(annotations)
    ]  # fmt: skip
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": anns,
        "categories": BENIGN.coco_categories(),
    }


def test_evaluation_json_holds_the_lesion_classification_with_a_benign_class(tmp_path):
    truth = coco([SPINE[:2], SPINE_P[:2], LESION[:2], ("benign", box(20, 30, 11, 19))])
    pred = scan(SPINE, SPINE_P, LESION, ("lesion", box(20, 30, 11, 19), 0.7))
    evaluation = evaluate_dataset(truth, [(1, pred)], BENIGN, output_dir=tmp_path)
    block = json.loads((tmp_path / "evaluation.json").read_text())["lesion_classification"]
    assert block["sensitivity"] == 1.0 and block["specificity"] == 0.0
    assert block["lesion_fp_on_benign_per_scan"] == 1.0 and block["accuracy"] == 0.5
    assert "1 - score of a benign call" in block["score_rule"]
    flat = EvaluationResult.from_dict(evaluation).flatten()
    assert flat["lesion_classification/specificity"] == 0.0
    plain = {**truth, "annotations": truth["annotations"][:3],
             "categories": DEFAULT.coco_categories()}  # fmt: skip
    ids = [DEFAULT.by_name(n).id for n in ("spine", "spine", "lesion")]
    kept = Instances.from_masks(H, W, ids, [SPINE[1], SPINE_P[1], LESION[1]], [0.9] * 3)
    assert "lesion_classification" not in evaluate_dataset(plain, [(1, kept)], DEFAULT)


# -- through the batch pipeline ---------------------------------------------------------------


def test_predict_writes_the_benign_hot_spots_into_bsi_json_the_report_and_the_seg(tmp_path):
    """A phantom whose look-alikes are labelled benign, its truth replayed as the model: the
    scan's bsi.json lists them, its report names them, and its SEG codes them as benign uptake
    rather than as an organ."""
    from bsi_d2.inference.batch import BatchOptions, run_batch
    from bsi_d2.inference.replay import ReplayPredictor, phantom_recording, save_recording

    out = tmp_path / "p"
    assert cli.main(["phantom", "--scans", "3", "--out", str(out), "--workers", "1",
                     "--label-benign"]) == 0  # fmt: skip
    recording = save_recording(tmp_path / "truth.jsonl", phantom_recording(out, BENIGN))
    replay = ReplayPredictor.from_file(recording, BENIGN)
    dicom_out = pytest.importorskip("highdicom", reason="the SEG needs bsi_d2[dicom]") is not None
    options = BatchOptions(dicom_out=dicom_out)
    run_batch([out / "dicom"], tmp_path / "pred", replay, BENIGN, options)
    records = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "pred").glob("scans/*/bsi.json"))
    ]
    found = [r for r in records if r["benign_hot_spots"] and r["benign_hot_spots"]["count"]]
    assert found, "no scan listed a benign hot spot"
    record = found[0]
    assert record["benign_hot_spots"]["sites"]
    scan_dir = tmp_path / "pred" / "scans" / record["key"]
    assert "Hot spots the model judges benign" in (scan_dir / "report.html").read_text()
    import pydicom

    seg = pydicom.dcmread(scan_dir / "dicom" / "seg_anterior.dcm")
    benign = [s for s in seg.SegmentSequence if s.SegmentLabel == "benign"]
    assert benign and benign[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "BENIGN"
    category = benign[0].SegmentedPropertyCategoryCodeSequence[0]
    assert category.CodeMeaning.lower() == "morphologically abnormal structure"
