import json

import numpy as np
import pytest

from bsi_d2.cli import main as cli_main
from bsi_d2.evaluation import evaluate_dataset
from bsi_d2.evaluation.coco_eval import GroundTruthError
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_to_rle
from bsi_d2.taxonomy import load_taxonomy

H, W = 24, 32
SKULL, SPINE, KIDNEY, LESION = 1, 2, 10, 11


def box(r0, r1, c0, c1):
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


# image id -> (category id, mask); image 3 has no lesion
SCENES = {
    1: [(SKULL, box(0, 6, 4, 12)), (SPINE, box(6, 20, 6, 10)), (LESION, box(8, 11, 6, 9))],
    2: [(SKULL, box(1, 7, 3, 11)), (KIDNEY, box(10, 14, 12, 16)), (LESION, box(2, 4, 4, 7))],
    3: [(SKULL, box(0, 5, 5, 13)), (SPINE, box(5, 22, 7, 11))],
}


def coco_gt() -> dict:
    anns = []
    for image_id, objs in SCENES.items():
        for cid, mask in objs:
            # RLE without area/bbox/iscrowd: the evaluator fills what COCOeval needs
            anns.append(
                {"image_id": image_id, "category_id": cid, "segmentation": mask_to_rle(mask)}
            )
    return {
        "images": [{"id": i, "height": H, "width": W, "file_name": f"{i}.png"} for i in SCENES],
        "annotations": anns,
    }


def instances(objs, score=0.9) -> Instances:
    if not objs:
        return Instances.empty(H, W)
    masks = np.stack([m for _, m in objs])
    return Instances(
        H,
        W,
        np.array([[0, 0, 1, 1]] * len(objs), np.float32),
        np.full(len(objs), score, np.float32),
        np.array([c for c, _ in objs], np.int64),
        masks,
    )


def test_perfect_predictions_score_one(taxonomy, tmp_path):
    preds = [(i, instances(objs)) for i, objs in SCENES.items()]
    result = evaluate_dataset(coco_gt(), preds, taxonomy, tmp_path)
    segm = result["coco"]["segm"]
    assert segm["AP"] == pytest.approx(1.0)
    assert segm["AP50"] == pytest.approx(1.0)
    for name in ("skull", "spine", "kidney", "lesion"):
        assert segm["per_class"][name] == pytest.approx(1.0)
    assert segm["per_class"]["pelvis"] is None
    assert result["pixel"]["mean"]["f1"] == 1.0
    assert result["pixel"]["mean_without_decoys"]["f1"] == 1.0
    assert result["lesion"]["dice_pooled"] == 1.0
    assert result["lesion"]["dice_mean_per_image"] == 1.0
    assert result["scan"]["accuracy"] == 1.0 and result["scan"]["auc"] == 1.0
    assert (result["scan"]["n_pos"], result["scan"]["n_neg"]) == (2, 1)

    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["coco"]["segm"]["AP"] == pytest.approx(1.0)
    coco_results = json.loads((tmp_path / "coco_segm_results.json").read_text())
    assert len(coco_results) == sum(len(o) for o in SCENES.values())
    assert "| skull" in (tmp_path / "pixel_table.md").read_text()


def test_missed_class_and_missing_image(taxonomy):
    # kidney never predicted; image 3 has no prediction entry at all
    preds = [(i, instances([o for o in SCENES[i] if o[0] != KIDNEY])) for i in (1, 2)]
    result = evaluate_dataset(coco_gt(), preds, taxonomy)
    assert result["pixel"]["per_class"]["kidney"]["sensitivity"] == 0.0
    assert result["coco"]["segm"]["per_class"]["kidney"] == 0.0
    spine = result["pixel"]["per_class"]["spine"]
    assert spine["fn"] == int(SCENES[3][1][1].sum())
    assert spine["sensitivity"] == pytest.approx(56 / (56 + 68))


def test_lesion_dice_and_scan_metrics(taxonomy):
    lesion_1 = box(8, 11, 6, 12)  # gt 9 px, predicted 18 px, overlap 9
    preds = [
        (1, instances([(LESION, lesion_1)], score=0.8)),
        (2, instances([(LESION, box(2, 4, 4, 7))], score=0.3)),  # below threshold: missed
        (3, instances([(LESION, box(0, 2, 0, 2))], score=0.6)),  # false positive scan
    ]
    result = evaluate_dataset(coco_gt(), preds, taxonomy, score_thresh=0.5)
    lesion = result["lesion"]
    assert (lesion["tp"], lesion["fp"], lesion["fn"]) == (9, 9 + 4, 6)
    assert lesion["dice_pooled"] == pytest.approx(2 * 9 / (2 * 9 + 13 + 6))
    # per image: 18/27, 0 (missed), 0 (false positive)
    assert lesion["dice_mean_per_image"] == pytest.approx((18 / 27 + 0 + 0) / 3)
    scan = result["scan"]
    assert (scan["tp"], scan["fn"], scan["fp"], scan["tn"]) == (1, 1, 1, 0)
    assert scan["sensitivity"] == 0.5 and scan["specificity"] == 0.0
    assert scan["accuracy"] == pytest.approx(1 / 3)
    # positives score 0.8 and 0.3, the negative 0.6: one of two pairs ranked right
    assert scan["auc"] == pytest.approx(0.5)
    # AP uses every score, the threshold only the pixel metrics
    assert result["coco"]["segm"]["per_class"]["lesion"] > 0


def test_class_threshold_keeps_low_scoring_lesions_only(taxonomy):
    preds = [
        (1, instances([(SPINE, box(6, 20, 6, 10)), (LESION, box(8, 11, 6, 9))], score=0.3)),
        (2, instances([(LESION, box(2, 4, 4, 7))], score=0.3)),
        (3, instances([(LESION, box(0, 2, 0, 2))], score=0.1)),  # under the lesion threshold
    ]
    plain = evaluate_dataset(coco_gt(), preds, taxonomy, score_thresh=0.5)
    lowered = evaluate_dataset(
        coco_gt(), preds, taxonomy, score_thresh=0.5, class_thresh={"lesion": 0.2}
    )
    assert plain["lesion"]["tp"] == 0 and plain["scan"]["tp"] == 0
    assert lowered["lesion"]["dice_pooled"] == pytest.approx(1.0)
    assert (lowered["scan"]["tp"], lowered["scan"]["fp"]) == (2, 0)
    # the spine at 0.3 stays below the general threshold
    assert lowered["pixel"]["per_class"]["spine"]["tp"] == 0
    assert lowered["class_thresh"] == {"lesion": 0.2}


def test_bad_ground_truth_names_the_file(taxonomy, tmp_path):
    bad = tmp_path / "gt.json"
    bad.write_text("{not json")
    with pytest.raises(GroundTruthError, match="gt.json"):
        evaluate_dataset(bad, [], taxonomy)
    with pytest.raises(GroundTruthError, match="not found"):
        evaluate_dataset(tmp_path / "missing.json", [], taxonomy)


def test_prediction_of_wrong_size_is_an_error(taxonomy):
    with pytest.raises(ValueError, match="image 1"):
        evaluate_dataset(coco_gt(), [(1, Instances.empty(H + 1, W))], taxonomy)


def test_cli_scores_a_results_file(tmp_path, capsys):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(coco_gt()))
    results = []
    for image_id, objs in SCENES.items():
        results += instances(objs).to_coco(image_id)
    pred_path = tmp_path / "coco_results.json"
    pred_path.write_text(json.dumps(results))
    out = tmp_path / "eval"
    rc = cli_main(
        [
            "evaluate",
            "--gt",
            str(gt_path),
            "--predictions",
            str(pred_path),
            "--out",
            str(out),
            "--bbox",
        ]
    )
    assert rc == 0
    written = json.loads((out / "evaluation.json").read_text())
    assert written["coco"]["segm"]["AP"] == pytest.approx(1.0)
    assert written["coco"]["bbox"]["AP"] == pytest.approx(1.0)
    assert "Average (w/o decoys)" in capsys.readouterr().out


def test_cli_reports_a_broken_predictions_file(tmp_path, caplog):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(coco_gt()))
    pred_path = tmp_path / "broken.json"
    pred_path.write_text("[{")
    rc = cli_main(["evaluate", "--gt", str(gt_path), "--predictions", str(pred_path)])
    assert rc == 2
    assert "broken.json" in caplog.text


def scene_gt(shape, objs, crowd=()) -> dict:
    """One image's COCO ground truth; each crowd mask becomes one ``iscrowd: 1`` annotation per
    class, as ``bsi_d2.data.convert`` writes a Labelme ``__ignore__`` shape."""
    h, w = shape
    anns = [{"image_id": 1, "category_id": cid, "segmentation": mask_to_rle(m)} for cid, m in objs]
    for mask in crowd:
        anns += [
            {"image_id": 1, "category_id": cid, "iscrowd": 1, "segmentation": mask_to_rle(mask)}
            for cid in load_taxonomy().ids
        ]
    return {"images": [{"id": 1, "height": h, "width": w}], "annotations": anns}


def scene_instances(shape, objs) -> Instances:
    """Predicted instances on an image of ``shape``; objs are (category id, mask, score)."""
    h, w = shape
    if not objs:
        return Instances.empty(h, w)
    return Instances(
        h,
        w,
        np.array([[0, 0, 1, 1]] * len(objs), np.float32),
        np.array([s for *_, s in objs], np.float32),
        np.array([c for c, *_ in objs], np.int64),
        np.stack([m for _, m, _ in objs]),
    )


def rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_crowd_region_is_ignored_not_ground_truth(taxonomy):
    shape = (160, 200)
    skull = rect(shape, 0, 70, 0, 77)  # 5390 px
    ignore = rect(shape, 0, 100, 100, 200)  # 100 x 100, beside the skull
    gt = scene_gt(shape, [(SKULL, skull)], crowd=[ignore])
    result = evaluate_dataset(gt, [(1, scene_instances(shape, [(SKULL, skull, 0.9)]))], taxonomy)
    skull_px = result["pixel"]["per_class"]["skull"]
    # old code: the crowd region was skull ground truth, sensitivity 5390 / 15390 = 0.35
    assert (skull_px["tp"], skull_px["fp"], skull_px["fn"]) == (5390, 0, 0)
    assert skull_px["sensitivity"] == 1.0
    assert result["pixel"]["per_class"]["lesion"]["f1"] is None
    assert (result["lesion"]["tp"], result["lesion"]["fn"]) == (0, 0)
    # old code: the crowd "lesion" made the scan metastasis positive
    assert (result["scan"]["n_pos"], result["scan"]["n_neg"]) == (0, 1)
    assert result["scan"]["specificity"] == 1.0


def test_predictions_inside_a_crowd_region_are_not_false_positives(taxonomy):
    shape = (160, 200)
    spine = rect(shape, 0, 150, 40, 60)
    ignore = rect(shape, 0, 100, 100, 200)
    # a single crowd annotation of one class still ignores its pixels for every class
    gt = scene_gt(shape, [(SPINE, spine)])
    gt["annotations"].append(
        {"image_id": 1, "category_id": SKULL, "iscrowd": 1, "segmentation": mask_to_rle(ignore)}
    )
    pred = scene_instances(
        shape,
        [
            (SPINE, spine | rect(shape, 0, 10, 60, 150), 0.9),  # spills 50 x 10 into the crowd
            (KIDNEY, rect(shape, 20, 40, 120, 140), 0.9),
            (LESION, rect(shape, 50, 60, 150, 160), 0.9),
        ],
    )
    result = evaluate_dataset(gt, [(1, pred)], taxonomy)
    per_class = result["pixel"]["per_class"]
    assert (per_class["spine"]["fp"], per_class["spine"]["sensitivity"]) == (400, 1.0)
    assert per_class["kidney"]["f1"] is None and per_class["skull"]["f1"] is None
    assert (result["lesion"]["fp"], result["lesion"]["dice_pooled"]) == (0, None)


def test_crowd_only_classes_have_no_ap(taxonomy):
    shape = (40, 40)
    gt = scene_gt(shape, [(SKULL, rect(shape, 0, 10, 0, 10))], crowd=[rect(shape, 20, 30, 20, 30)])
    segm = evaluate_dataset(gt, [], taxonomy)["coco"]["segm"]
    assert segm["per_class"]["skull"] == 0.0
    # old code: 0.0, as if pelvis had ground truth that was missed
    assert segm["per_class"]["pelvis"] is None


def test_scan_positive_is_the_reports_abnormal_call(taxonomy):
    kidney, in_kidney = box(10, 16, 20, 28), box(11, 14, 21, 25)
    spine, in_spine = box(2, 22, 6, 12), box(8, 11, 7, 10)
    gt = {
        "images": [{"id": i, "height": H, "width": W} for i in (1, 2, 3, 4)],
        "annotations": [
            {"image_id": i, "category_id": c, "segmentation": mask_to_rle(m)}
            for i, c, m in [
                (1, KIDNEY, kidney),
                (1, LESION, in_kidney),  # a "lesion" in the kidney: not metastatic
                (2, SPINE, spine),
                (2, LESION, in_spine),
                (3, SPINE, spine),
                (4, SPINE, spine),
            ]
        ],
    }
    scenes = {
        1: [(KIDNEY, kidney, 0.9), (LESION, in_kidney, 0.9)],
        2: [(SPINE, spine, 0.9), (LESION, in_spine, 0.4), (KIDNEY, kidney, 0.9)]
        + [(LESION, in_kidney, 0.95)],
        3: [(SPINE, spine, 0.9), (LESION, in_spine, 0.3)],
        4: [(SPINE, spine, 0.9), (KIDNEY, kidney, 0.9), (LESION, in_kidney, 0.97)],
    }
    preds = [(i, scene_instances((H, W), objs)) for i, objs in scenes.items()]
    scan = evaluate_dataset(gt, preds, taxonomy, score_thresh=0.5)["scan"]
    # old code: scan 1 truth positive, every scan with a kidney lesion called positive
    assert (scan["n_pos"], scan["n_neg"]) == (1, 3)
    assert (scan["tp"], scan["fn"], scan["fp"], scan["tn"]) == (0, 1, 0, 3)
    # ranked by the bone lesions only (0, 0.4, 0.3, 0): old code 0.5 from the kidney lesions
    assert scan["auc"] == 1.0
    lowered = evaluate_dataset(
        gt, preds, taxonomy, score_thresh=0.5, class_thresh={"lesion": 0.35}
    )["scan"]
    assert (lowered["tp"], lowered["fn"], lowered["fp"], lowered["tn"]) == (1, 0, 0, 3)


def test_lesion_count_and_burden_group_agreement(taxonomy, capsys, tmp_path):
    spine = box(2, 22, 6, 12)
    lesions = [box(3, 5, 7, 9), box(7, 9, 7, 9), box(11, 13, 7, 9), box(15, 17, 7, 9)]
    # image -> (ground-truth lesions, predicted lesions): groups few/few, none/few, medium/few,
    # none/none
    counts = {1: (2, 2), 2: (0, 1), 3: (4, 3), 4: (0, 0)}
    gt = {
        "images": [{"id": i, "height": H, "width": W} for i in counts],
        "annotations": [
            {"image_id": i, "category_id": c, "segmentation": mask_to_rle(m)}
            for i, (n_gt, _) in counts.items()
            for c, m in [(SPINE, spine)] + [(LESION, m) for m in lesions[:n_gt]]
        ],
    }
    preds = [
        (i, instances([(SPINE, spine)] + [(LESION, m) for m in lesions[:n_pred]]))
        for i, (_, n_pred) in counts.items()
    ]
    burden = evaluate_dataset(gt, preds, taxonomy)["burden"]
    assert burden["n"] == 4
    assert burden["count_mean_absolute_error"] == pytest.approx(0.5)
    assert burden["count_mean_signed_error"] == pytest.approx(0.0)
    assert burden["count_exact_agreement"] == pytest.approx(0.5)
    assert burden["group_agreement"] == pytest.approx(0.5)
    # po = 2/4; truth few 1, none 2, medium 1; predicted few 3, none 1: pe = (3 + 2) / 16
    assert burden["group_kappa"] == pytest.approx((0.5 - 5 / 16) / (1 - 5 / 16))
    assert burden["group_confusion"]["medium"]["few"] == 1
    assert burden["group_confusion"]["none"] == {"none": 1, "few": 1, "medium": 0, "extensive": 0}

    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps([r for i, p in preds for r in p.to_coco(i)]))
    assert cli_main(["evaluate", "--gt", str(gt_path), "--predictions", str(pred_path)]) == 0
    assert "burden group agreement 0.5000  kappa 0.2727" in capsys.readouterr().out
