import numpy as np
import pytest

from bsi_d2.evaluation import format_pixel_table, pixel_metrics

# s = skull, p = spine, k = kidney, l = lesion, . = nothing
GT = """
ssss....
ssss....
ssss..kk
ssss..kk
pp....kk
pp....kk
pp......
pp......
"""
PRED = """
........
........
ssss..kk
ssss..kk
pp...s..
pp...s..
pp......
pp......
"""
LETTERS = {"s": "skull", "p": "spine", "k": "kidney", "l": "lesion"}


def draw(picture: str) -> dict[str, np.ndarray]:
    grid = np.array([list(row) for row in picture.split()])
    return {name: grid == ch for ch, name in LETTERS.items() if (grid == ch).any()}


def test_hand_drawn_counts_and_ratios(taxonomy):
    result = pixel_metrics(draw(GT), draw(PRED), taxonomy)
    skull = result["per_class"]["skull"]
    # gt 16 px, predicted 10 px of which 8 overlap
    assert (skull["tp"], skull["fp"], skull["fn"]) == (8, 2, 8)
    assert skull["precision"] == pytest.approx(8 / 10)
    assert skull["sensitivity"] == pytest.approx(8 / 16)
    assert skull["f1"] == pytest.approx(2 * 8 / (2 * 8 + 2 + 8))
    spine = result["per_class"]["spine"]
    assert (spine["tp"], spine["fp"], spine["fn"]) == (8, 0, 0)
    assert spine["f1"] == 1.0
    kidney = result["per_class"]["kidney"]
    assert (kidney["tp"], kidney["fp"], kidney["fn"]) == (4, 0, 4)
    assert kidney["precision"] == 1.0 and kidney["sensitivity"] == 0.5
    # classes absent from both sides are undefined, not zero
    assert result["per_class"]["pelvis"]["f1"] is None


def test_averages_with_and_without_kidney(taxonomy):
    result = pixel_metrics(draw(GT), draw(PRED), taxonomy)
    f1 = {"skull": 16 / 26, "spine": 1.0, "kidney": 8 / 12}
    assert result["mean"]["n_classes"] == 3
    assert result["mean"]["precision"] == pytest.approx((0.8 + 1.0 + 1.0) / 3)
    assert result["mean"]["sensitivity"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert result["mean"]["f1"] == pytest.approx(sum(f1.values()) / 3)
    assert result["mean_without_decoys"]["n_classes"] == 2
    assert result["mean_without_decoys"]["precision"] == pytest.approx((0.8 + 1.0) / 2)
    assert result["mean_without_decoys"]["sensitivity"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["mean_without_decoys"]["f1"] == pytest.approx((f1["skull"] + 1.0) / 2)
    # skeleton pools the region classes' counts: tp 8 + 8, fp 2, fn 8
    skeleton = result["skeleton"]
    assert (skeleton["tp"], skeleton["fp"], skeleton["fn"]) == (16, 2, 8)
    assert skeleton["precision"] == pytest.approx(16 / 18)
    assert skeleton["sensitivity"] == pytest.approx(16 / 24)


def test_counts_are_summed_over_images_before_ratios(taxonomy):
    first = pixel_metrics(draw(GT), draw(PRED), taxonomy)
    twice = pixel_metrics([draw(GT), draw(GT)], [draw(PRED), draw(GT)], taxonomy)
    skull = twice["per_class"]["skull"]
    assert (skull["tp"], skull["fp"], skull["fn"]) == (8 + 16, 2, 8)
    assert skull["precision"] == pytest.approx(24 / 26)
    # not the mean of per-image ratios
    assert skull["precision"] != pytest.approx(
        np.mean([first["per_class"]["skull"]["precision"], 1.0])
    )


def test_missed_class_has_zero_sensitivity(taxonomy):
    gt = draw(GT)
    pred = {k: v for k, v in draw(GT).items() if k != "kidney"}
    result = pixel_metrics(gt, pred, taxonomy)
    kidney = result["per_class"]["kidney"]
    assert kidney["sensitivity"] == 0.0
    # nothing predicted: precision is undefined, not 0
    assert kidney["precision"] is None
    assert kidney["f1"] == 0.0
    assert result["mean_without_decoys"]["f1"] == 1.0
    assert result["mean"]["f1"] == pytest.approx(2 / 3)
    assert result["mean"]["sensitivity"] == pytest.approx(2 / 3)
    assert result["mean"]["precision"] == 1.0


def test_perfect_prediction_gives_f1_one(taxonomy):
    result = pixel_metrics(draw(GT), draw(GT), taxonomy)
    for key in ("mean", "mean_without_decoys", "skeleton"):
        assert result[key]["f1"] == 1.0


def test_lesions_scored_but_kept_out_of_averages(taxonomy):
    gt = {**draw(GT), "lesion": np.eye(8, dtype=bool)}
    pred = draw(GT)  # lesion missed entirely
    result = pixel_metrics(gt, pred, taxonomy)
    assert result["per_class"]["lesion"]["sensitivity"] == 0.0
    assert result["mean"]["f1"] == 1.0


def test_ids_and_names_address_the_same_class(taxonomy):
    by_name = pixel_metrics(draw(GT), draw(PRED), taxonomy)
    by_id = pixel_metrics(
        {taxonomy.by_name(k).id: v for k, v in draw(GT).items()},
        {taxonomy.by_name(k).id: v for k, v in draw(PRED).items()},
        taxonomy,
    )
    assert by_id["per_class"]["skull"] == by_name["per_class"]["skull"]


def test_without_taxonomy_every_label_is_a_region():
    result = pixel_metrics({"a": np.ones((2, 2), bool)}, {"a": np.eye(2, dtype=bool)})
    assert result["per_class"]["a"]["sensitivity"] == 0.5
    assert result["skeleton"]["sensitivity"] == 0.5


def test_shape_mismatch_is_an_error(taxonomy):
    with pytest.raises(ValueError, match="differ"):
        pixel_metrics({"skull": np.ones((4, 4), bool)}, {"skull": np.ones((4, 5), bool)}, taxonomy)


def test_table_has_seed_000_shape(taxonomy):
    table = format_pixel_table(pixel_metrics(draw(GT), draw(PRED), taxonomy))
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Category", "Precision", "Sensitivity", "F1"]
    rows = {
        c[0]: c[1:] for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in lines[2:])
    }
    assert rows["skull"] == ["80.00", "50.00", "61.54"]
    assert rows["pelvis"] == ["-", "-", "-"]
    assert "Average" in rows and "Average (w/o decoys)" in rows and "Skeleton (pooled)" in rows
    names = list(rows)
    assert names.index("kidney") < names.index("Average") < names.index("lesion")


def test_undefined_ratios_are_none_and_left_out_of_means(taxonomy):
    gt = {"skull": draw(GT)["skull"], "spine": draw(GT)["spine"]}
    # kidney predicted where there is none: no ground truth, so no sensitivity
    pred = {**gt, "kidney": draw(GT)["kidney"]}
    result = pixel_metrics(gt, pred, taxonomy)
    kidney = result["per_class"]["kidney"]
    # old code: sensitivity 0.0, pulling the mean sensitivity down to 2/3
    assert kidney["sensitivity"] is None
    assert kidney["precision"] == 0.0 and kidney["f1"] == 0.0
    mean = result["mean"]
    assert mean["sensitivity"] == 1.0
    assert mean["precision"] == pytest.approx(2 / 3) and mean["f1"] == pytest.approx(2 / 3)
    assert mean["n_classes"] == 3
    table = format_pixel_table(result)
    kidney_row = next(ln for ln in table.splitlines() if ln.startswith("| kidney"))
    assert [c.strip() for c in kidney_row.strip("|").split("|")][1:] == ["0.00", "-", "0.00"]
