"""``rank-unlabelled``: which scan to annotate next. Hand-built predictors on hand-drawn 8-bit
merged scans: one flip-equivariant by construction (every augmentation agrees: uncertainty 0),
one that sees lesions only left of column 300 (a flip changes its answer), one whose lesion
score falls with the number of hot spots (entropy)."""

import json

import numpy as np
import pytest
from PIL import Image

from bsi_d2 import cli
from bsi_d2.data.augment import hflip_image
from bsi_d2.inference.batch import BatchOptions, content_key
from bsi_d2.inference.replay import RecordingPredictor
from bsi_d2.inference.uncertainty import (
    AUGMENTATIONS,
    binary_entropy,
    entropy_uncertainty,
    mask_iou,
    parse_augmentations,
    tta_uncertainty,
)
from bsi_d2.io.labelme import load_labelme
from bsi_d2.structures.instances import Instances
from bsi_d2.workflows.active import random_order, rank_unlabelled

HEIGHT, WIDTH = 950, 512
HOT = 250  # a lesion pixel to the hand-built models; the background (10) never reaches it
LEFT = (60, 200)  # humerus_AR's columns; humerus_PR takes their mirror image (312, 452)
MIDDLE = (220, 290)  # outside both regions, seen by the one-sided model unflipped and flipped
# scan name -> the columns of its 10 x 10 hot spots
SCANS = {
    "calm": [MIDDLE[0], MIDDLE[0] + 30],
    "mild": [MIDDLE[0], MIDDLE[0] + 20, MIDDLE[0] + 40, LEFT[0] + 20],
    "wild": [MIDDLE[0], LEFT[0] + 10, LEFT[0] + 50, LEFT[0] + 90],
    "blank": [],
}


def _scan(columns, row=300):
    image = np.full((HEIGHT, WIDTH), 10, np.uint8)
    for i, column in enumerate(columns):
        image[row + 30 * i : row + 30 * i + 10, column : column + 10] = 255
    return image


def _regions(taxonomy):
    """humerus_AR on the left, its flip partner humerus_PR mirrored: flip-symmetric as a set."""
    left = np.zeros((HEIGHT, WIDTH), bool)
    left[150:800, LEFT[0] : LEFT[1]] = True
    ids = [taxonomy.by_name("humerus_AR").id, taxonomy.by_name("humerus_PR").id]
    return ids, [left, left[:, ::-1].copy()]


class HotSpotPredictor:
    """Both humeri and one lesion: the hot pixels in columns below ``reach`` (all: the model
    is flip-equivariant). ``score`` gives the lesion's score from its pixel count."""

    def __init__(self, taxonomy, reach=WIDTH, score=lambda pixels: 0.9):
        self.taxonomy, self.reach, self.score = taxonomy, reach, score
        self.batch_size = 4

    def __call__(self, images):
        found = []
        for image in images:
            ids, masks = _regions(self.taxonomy)
            scores = [1.0, 1.0]
            hot = np.asarray(image) >= HOT
            hot[:, self.reach :] = False
            if hot.any():
                ids.append(self.taxonomy.by_name("lesion").id)
                masks.append(hot)
                scores.append(self.score(int(hot.sum())))
            found.append(Instances.from_masks(HEIGHT, WIDTH, ids, masks, scores))
        return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabelled")
    for name, columns in SCANS.items():
        Image.fromarray(_scan(columns)).save(root / f"{name}.png")
    (root / "broken.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def keys(inputs):
    return {name: content_key([inputs / f"{name}.png"]) for name in SCANS}


def _options():
    return BatchOptions(progress=False, prefetch=0, writers=0, score_thresh=0.5)


def _rank(inputs, out, predictor, taxonomy, **kw):
    return rank_unlabelled([inputs], out, predictor, taxonomy, _options(), **kw)


def _labelme_names(out):
    """The Labelme documents in OUT/labelme/ (not their .meta.json study links)."""
    return sorted(p.name for p in (out / "labelme").glob("*.json") if ".meta." not in p.name)


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file() and "runs" not in p.parts}  # fmt: skip


@pytest.fixture(scope="module")
def one_sided(inputs, taxonomy, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_sided")
    ranking = _rank(inputs, out, HotSpotPredictor(taxonomy, reach=300), taxonomy, top=2)
    return out, ranking


# -- the parts ------------------------------------------------------------------------------


def test_a_flip_equivariant_model_gives_back_what_it_gave(taxonomy):
    predictor, flip = HotSpotPredictor(taxonomy), AUGMENTATIONS["hflip"]
    image = _scan(SCANS["wild"])
    (plain,) = predictor([image])
    (restored,) = [flip.restore(i, taxonomy) for i in predictor([flip.image(image)])]
    order = np.argsort(plain.category_ids)
    again = np.argsort(restored.category_ids)
    assert np.array_equal(plain.category_ids[order], restored.category_ids[again])
    assert np.array_equal(plain.masks[order], restored.masks[again])
    assert np.array_equal(plain.boxes[order], restored.boxes[again])
    assert np.array_equal(flip.image(image), hflip_image(image))


def test_intensity_scales_and_saturates_the_display():
    image = np.array([[10, 100, 250]], np.uint8)
    assert AUGMENTATIONS["intensity"].image(image).tolist() == [[12, 125, 255]]


def test_tta_uncertainty_is_zero_when_answers_agree_and_grows_with_disagreement():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    half = mask.copy()
    half[2:6, 4:6] = False
    names = ("identity", "hflip")
    assert tta_uncertainty(names, [mask, mask], [1.5, 1.5]).uncertainty == 0.0
    assert tta_uncertainty(names, [np.zeros_like(mask)] * 2, [None, None]).uncertainty == 0.0
    some = tta_uncertainty(names, [mask, half], [1.5, 1.5])
    assert some.uncertainty == pytest.approx(0.5)  # IoU 8 / 16
    more = tta_uncertainty(names, [mask, half], [1.5, 1.0], bsi_weight=2.0)
    assert more.uncertainty == pytest.approx(0.5 + 2.0 * 0.5)
    assert more.parts["bsi_range"] == pytest.approx(0.5) and more.parts["bsi_hflip"] == 1.0
    assert mask_iou(mask, ~mask) == 0.0


def test_entropy_is_a_mean_of_binary_entropies():
    assert binary_entropy(np.array([0.0, 0.5, 1.0])).tolist() == [0.0, 1.0, 0.0]
    scored = entropy_uncertainty(np.array([0.5, 1.0]))
    assert scored.uncertainty == pytest.approx(0.5)
    assert scored.parts == {"detections": 2, "entropy_max": 1.0}
    assert entropy_uncertainty(np.zeros(0)).uncertainty == 0.0


def test_unknown_augmentation_is_refused():
    assert parse_augmentations("intensity, hflip") == ("intensity", "hflip")
    with pytest.raises(ValueError, match="rotate"):
        parse_augmentations("hflip,rotate")


# -- the ranking ----------------------------------------------------------------------------


def test_agreeing_augmentations_rank_every_scan_at_zero(inputs, keys, taxonomy, tmp_path):
    ranking = _rank(inputs, tmp_path, HotSpotPredictor(taxonomy), taxonomy, top=0)
    assert [s.uncertainty for s in ranking.scans] == [0.0] * len(SCANS)
    assert [s.key for s in ranking.scans] == sorted(keys.values())  # all tied: by key
    wild = next(s for s in ranking.scans if s.key == keys["wild"])
    assert wild.parts["bsi_identity"] > 0  # lesions were found and counted, all alike
    assert not (tmp_path / "labelme").exists() or not list((tmp_path / "labelme").iterdir())


def test_disagreement_ranks_scans_and_breaks_ties_by_key(one_sided, keys):
    _, ranking = one_sided
    by_key = {s.key: s for s in ranking.scans}
    order = [keys["wild"], keys["mild"], *sorted([keys["calm"], keys["blank"]])]
    assert [s.key for s in ranking.scans] == order
    # lesion IoU unflipped vs flipped: mild 3/4, wild 1/4; intensity agrees with unflipped
    assert by_key[keys["mild"]].parts["mask_disagreement"] == pytest.approx(1 - 2.5 / 3)
    assert by_key[keys["wild"]].parts["mask_disagreement"] == pytest.approx(1 - 1.5 / 3)
    assert by_key[keys["wild"]].parts["bsi_range"] > by_key[keys["mild"]].parts["bsi_range"] > 0
    assert by_key[keys["calm"]].uncertainty == by_key[keys["blank"]].uncertainty == 0.0


def test_ranking_files_name_scans_by_key_alone(one_sided, inputs, keys):
    out, ranking = one_sided
    rows = (out / "ranking.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["rank", "key", "uncertainty"]
    assert [r.split(",")[1] for r in rows[1:]] == [s.key for s in ranking.scans]
    document = json.loads((out / "ranking.json").read_text())
    assert [r["rank"] for r in document["scans"]] == [1, 2, 3, 4]
    assert document["method"] == "tta" and document["augmentations"] == ["hflip", "intensity"]
    for path in ("ranking.csv", "ranking.json", "errors.jsonl"):
        text = (out / path).read_text()
        assert str(inputs) not in text
        assert not any(name in text for name in [*SCANS, "broken"])


def test_top_n_get_labelme_files_that_load(one_sided, keys):
    out, ranking = one_sided
    top = [s.key for s in ranking.scans[:2]]
    assert _labelme_names(out) == sorted(f"{k}.json" for k in top)
    assert [s.labelme for s in ranking.scans] == [f"labelme/{k}.json" for k in top] + [None] * 2
    labelme = load_labelme(out / "labelme" / f"{keys['wild']}.json")
    assert {s.label for s in labelme.shapes} == {"humerus_AR", "humerus_PR", "lesion"}
    assert (out / "labelme" / labelme.image_path).is_file()
    assert (labelme.height, labelme.width) == (HEIGHT, WIDTH)


def test_a_broken_input_is_recorded_and_the_rest_ranked(one_sided):
    out, ranking = one_sided
    assert len(ranking.scans) == len(SCANS)
    (error,) = ranking.errors
    assert error["augmentations"] == ["identity", "hflip", "intensity"]
    assert [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()] == [error]
    assert json.loads((out / "ranking.json").read_text())["errors"] == [error]


def test_same_inputs_and_model_give_identical_files(one_sided, inputs, taxonomy, tmp_path):
    out, _ = one_sided
    expected = _files(out)
    _rank(inputs, tmp_path, HotSpotPredictor(taxonomy, reach=300), taxonomy, top=2)
    assert _files(tmp_path) == expected  # a fresh folder
    _rank(inputs, tmp_path, HotSpotPredictor(taxonomy, reach=300), taxonomy, top=2)
    assert _files(tmp_path) == expected  # a rerun, resumed from its runs


def test_another_model_is_not_answered_from_the_last_ones_runs(inputs, taxonomy, tmp_path):
    one_sided = HotSpotPredictor(taxonomy, reach=300)
    options = _options()
    options.model = {"weights": "round1.pth"}
    first = rank_unlabelled([inputs], tmp_path, one_sided, taxonomy, options)
    assert first.scans[0].uncertainty > 0
    options.model = {"weights": "round2.pth"}
    second = rank_unlabelled([inputs], tmp_path, HotSpotPredictor(taxonomy), taxonomy, options)
    assert [s.uncertainty for s in second.scans] == [0.0] * len(SCANS)


def test_entropy_ranks_uncertain_scores_first(inputs, keys, taxonomy, tmp_path):
    predictor = HotSpotPredictor(taxonomy, score=lambda pixels: 1.0 - pixels / 1000)
    ranking = _rank(inputs, tmp_path, predictor, taxonomy, method="entropy", top=1)
    # 4 hot spots (mild, wild): score 0.6, the closest to 0.5, tied and broken by key
    order = [*sorted([keys["mild"], keys["wild"]]), keys["calm"], keys["blank"]]
    assert [s.key for s in ranking.scans] == order
    top = ranking.scans[0]
    assert top.uncertainty == pytest.approx(float(binary_entropy(np.array([0.6]))[0]) / 3)
    assert top.parts["detections"] == 3
    assert not (tmp_path / "runs" / "hflip").exists()  # entropy needs the scan alone


def test_random_order_is_seeded_and_ignores_input_order():
    keys = [f"c{i:016x}" for i in range(20)]
    assert random_order(keys, 7) == random_order(keys[::-1], 7)
    assert sorted(random_order(keys, 7)) == keys
    assert random_order(keys, 7) != random_order(keys, 8)


def test_random_ranking_orders_the_same_scans(one_sided, inputs, taxonomy, tmp_path):
    _, ranked = one_sided
    ranking = _rank(inputs, tmp_path, HotSpotPredictor(taxonomy), taxonomy, random_seed=3, top=1)
    assert [s.key for s in ranking.scans] == random_order([s.key for s in ranked.scans], 3)
    assert all(s.uncertainty is None for s in ranking.scans)
    assert json.loads((tmp_path / "ranking.json").read_text())["settings"]["seed"] == 3
    assert _labelme_names(tmp_path) == [f"{ranking.scans[0].key}.json"]


def test_command_replays_a_recording_to_the_same_ranking(one_sided, inputs, taxonomy, tmp_path):
    out, _ = one_sided
    recorder = RecordingPredictor(HotSpotPredictor(taxonomy, reach=300))
    _rank(inputs, tmp_path / "recorded", recorder, taxonomy, top=2)
    recording = recorder.save(tmp_path / "rec.jsonl")
    replayed = tmp_path / "replayed"
    argv = ["rank-unlabelled", str(inputs), "--replay", str(recording), "--out", str(replayed),
            "--top", "2", "--no-progress", "--score-thresh", "0.5", "--writers", "0"]  # fmt: skip
    assert cli.main(argv) == 0
    assert (replayed / "ranking.csv").read_text() == (out / "ranking.csv").read_text()
    rows = json.loads((replayed / "ranking.json").read_text())["scans"]
    assert rows == json.loads((out / "ranking.json").read_text())["scans"]


def test_command_refuses_an_output_folder_inside_the_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    argv = ["rank-unlabelled", str(tmp_path / "in"), "--replay", str(tmp_path / "none.jsonl"),
            "--out", str(tmp_path / "in" / "ranked")]  # fmt: skip
    (tmp_path / "none.jsonl").write_text("")
    assert cli.main(argv) == 2
