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


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy()


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
