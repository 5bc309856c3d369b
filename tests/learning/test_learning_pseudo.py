"""Learning from unlabelled scans: model-made flags through Labelme -> COCO, the per-class
threshold rule, ``bsi-d2 pseudo-label`` on phantoms with a recording standing in for a model,
and the labelled + pseudo-labelled training mix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.coco import write_coco_layout
from helpers.paths import CPU_CONFIG
from PIL import Image

from bsi_d2 import cli
from bsi_d2.data.convert import convert_labelme_folder
from bsi_d2.data.datasets import (
    DatasetError,
    mix_pseudo_labelled,
    pseudo_sample_count,
    register_all,
    training_dataset_dicts,
)
from bsi_d2.inference.outputs import labelme_shapes
from bsi_d2.inference.pseudo import (
    PseudoLabelError,
    match_image,
    precision_threshold,
    read_thresholds,
)
from bsi_d2.io.labelme import (
    MODEL_MADE,
    labelme_instances,
    labelme_shape,
    load_labelme,
    write_labelme,
)
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import mask_to_bbox, mask_to_polygons

SKULL, SPINE, LESION = 1, 2, 11


def _box(height: int, width: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _instances(masks, ids, scores) -> Instances:
    height, width = masks[0].shape
    return Instances.from_masks(height, width, list(ids), list(masks), list(scores))


# -- flags through Labelme and the converter ---------------------------------------------------
def _model_made_file(folder: Path, taxonomy) -> Path:
    """A model's Labelme file of a 40 x 32 scan: a skull, a spine and a lesion, with scores."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 32), 50, np.uint8)).save(folder / "scan.png")
    masks = [_box(40, 32, 2, 10, 8, 24), _box(40, 32, 12, 38, 14, 18), _box(40, 32, 20, 26, 2, 8)]
    predicted = _instances(masks, [SKULL, SPINE, LESION], [0.91, 0.873, 0.66])
    shapes = labelme_shapes(predicted, taxonomy)
    return write_labelme(folder / "scan.json", "scan.png", 40, 32, shapes, model_made=True)


def test_a_models_labelme_file_flags_itself_and_every_shape(tmp_path, taxonomy):
    raw = json.loads(_model_made_file(tmp_path, taxonomy).read_text())
    assert raw["flags"] == {MODEL_MADE: True}
    assert [s["flags"] for s in raw["shapes"]] == [{MODEL_MADE: True}] * 3
    assert raw["shapes"][1]["description"] == "model score 0.873"
    # a human's file, as the phantom and preprocess write them, is not flagged
    human = write_labelme(tmp_path / "h.json", "scan.png", 40, 32, [
        labelme_shape("skull", [(1, 1), (9, 1), (9, 9)])])  # fmt: skip
    assert json.loads(human.read_text())["flags"] == {}


def test_reading_keeps_the_flag_and_the_score_and_an_unticked_shape_is_human(tmp_path, taxonomy):
    path = _model_made_file(tmp_path, taxonomy)
    raw = json.loads(path.read_text())
    raw["shapes"][1]["flags"][MODEL_MADE] = False  # the reviewer corrected the spine
    path.write_text(json.dumps(raw))
    labelme = load_labelme(path)
    assert labelme.model_made
    instances, _ = labelme_instances(labelme, taxonomy)
    by_label = {inst.label: inst for inst in instances}
    assert by_label["skull"].model_made and by_label["skull"].score == pytest.approx(0.91)
    assert not by_label["spine"].model_made and by_label["spine"].provenance() == {}
    assert by_label["lesion"].provenance() == {MODEL_MADE: True, "score": 0.66}


def test_one_human_shape_of_a_group_makes_the_instance_human(tmp_path, taxonomy):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "scan.png")
    made = labelme_shape("lesion", [(1, 1), (5, 1), (5, 5)], group_id=0, score=0.8)
    drawn = labelme_shape("lesion", [(10, 10), (15, 10), (15, 15)], group_id=0)
    write_labelme(tmp_path / "scan.json", "scan.png", 20, 20, [made, drawn], model_made=True)
    (instance,), _ = labelme_instances(load_labelme(tmp_path / "scan.json"), taxonomy)
    assert not instance.model_made and instance.provenance() == {}


def test_convert_carries_the_flags_into_coco(tmp_path, taxonomy):
    src = tmp_path / "labelme"
    path = _model_made_file(src, taxonomy)
    raw = json.loads(path.read_text())
    raw["shapes"][1]["flags"] = {}  # unticked and saved by Labelme
    path.write_text(json.dumps(raw))
    _model_made_file(src / "human", taxonomy)
    human = json.loads((src / "human" / "scan.json").read_text())
    human["flags"] = {}
    for shape in human["shapes"]:
        shape["flags"] = {}
    (src / "human" / "scan.json").write_text(json.dumps(human))

    convert_labelme_folder(src, tmp_path / "coco", taxonomy, split=(1, 0, 0), workers=1)
    coco = json.loads((tmp_path / "coco/annotations/instances_all.json").read_text())
    image_of = {img["labelme_file"]: img for img in coco["images"]}
    assert image_of["scan.json"]["model_made"] is True
    assert "model_made" not in image_of["human/scan.json"]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    made = {
        names[a["category_id"]]: a
        for a in coco["annotations"]
        if a["image_id"] == image_of["scan.json"]["id"]
    }
    assert made["skull"]["model_made"] is True and made["skull"]["score"] == pytest.approx(0.91)
    assert "model_made" not in made["spine"] and "score" not in made["spine"]
    theirs = [a for a in coco["annotations"] if a["image_id"] == image_of["human/scan.json"]["id"]]
    assert len(theirs) == 3 and not any("model_made" in a for a in theirs)


# -- the threshold rule ---------------------------------------------------------------------
def test_the_lowest_threshold_reaching_the_target_precision_is_chosen():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    is_tp = [True, True, False, True, False, False]
    found = precision_threshold(scores, is_tp, n_truth=4, target=0.75)
    # precision at 0.9, 0.8, 0.7, 0.6, 0.5, 0.4: 1, 1, 2/3, 3/4, 3/5, 1/2
    assert found["threshold"] == pytest.approx(0.6)
    assert found["precision"] == pytest.approx(0.75) and found["recall"] == pytest.approx(0.75)
    assert (found["kept"], found["true_positives"]) == (4, 3)
    assert precision_threshold(scores, is_tp, 4, 0.9)["threshold"] == pytest.approx(0.8)


def test_tied_scores_are_kept_or_dropped_together_and_a_class_may_get_none():
    tied = precision_threshold([0.8, 0.8], [True, False], n_truth=1, target=0.9)
    assert tied["threshold"] is None and "never reaches 0.9" in tied["reason"]
    none = precision_threshold([], [], n_truth=3, target=0.9)
    assert none["threshold"] is None and "no prediction" in none["reason"]


def test_matching_is_one_to_one_by_score_per_class_and_crowd_is_ignored():
    h, w = 30, 30
    truth = _instances([_box(h, w, 0, 10, 0, 10)], [LESION], [1.0])
    ignore = _box(h, w, 20, 30, 20, 30)
    predicted = _instances(
        [
            _box(h, w, 0, 10, 0, 9),  # IoU 0.9, lower score: a duplicate
            _box(h, w, 0, 10, 0, 10),  # exact, highest score: the match
            _box(h, w, 21, 29, 21, 29),  # inside the crowd region
            _box(h, w, 0, 10, 0, 10),  # right place, wrong class
            _box(h, w, 0, 10, 5, 15),  # IoU 1/3: a miss
        ],
        [LESION, LESION, LESION, SKULL, LESION],
        [0.7, 0.9, 0.6, 0.95, 0.8],
    )
    is_tp, ignored = match_image(predicted, truth, ignore, 0.5)
    assert is_tp.tolist() == [False, True, False, False, False]
    assert ignored.tolist() == [False, False, True, False, False]


def test_a_thresholds_file_is_checked_and_names_itself(tmp_path, taxonomy):
    given = tmp_path / "t.json"
    given.write_text(json.dumps({"lesion": 0.7, "Skull": None}))
    doc = read_thresholds(given, taxonomy)
    assert doc["thresholds"]["lesion"] == 0.7 and doc["thresholds"]["spine"] is None
    for bad, said in [({"lezion": 0.5}, "not in taxonomy"), ({"lesion": 1.5}, "[0, 1]"),
                      ([0.5], "expected")]:  # fmt: skip
        given.write_text(json.dumps(bad))
        with pytest.raises(PseudoLabelError, match=said) as err:
            read_thresholds(given, taxonomy)
        assert str(given) in str(err.value)


# -- bsi-d2 pseudo-label ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Three phantoms, their Labelme folder converted to COCO (the validation split), and a
    recording of their truth plus two low-scoring false lesions per scan."""
    from bsi_d2.inference.replay import (
        entry_instances,
        instances_entry,
        phantom_recording,
        save_recording,
    )
    from bsi_d2.phantom import write_phantoms
    from bsi_d2.taxonomy import load_taxonomy

    root = tmp_path_factory.mktemp("pseudo")
    write_phantoms(root / "ph", 3, seed=3, workers=1)
    convert_labelme_folder(root / "ph" / "labelme", root / "coco", split=(1, 0, 0), workers=1)
    taxonomy = load_taxonomy()
    entries = []
    for entry in phantom_recording(root / "ph", taxonomy, seed=0):
        truth = entry_instances(entry)
        false = [_box(truth.height, truth.width, 900, 910, x, x + 10) for x in (10, 300)]
        extra = Instances.from_masks(truth.height, truth.width, [LESION, LESION], false,
                                     [0.3, 0.35])  # fmt: skip
        entries.append(instances_entry(entry["display"], Instances.cat([truth, extra])))
    recording = save_recording(root / "ph.rec", entries)
    return {"root": root, "recording": recording, "n_truth_lesions": _truth_lesions(root)}


def _truth_lesions(root: Path) -> int:
    coco = json.loads((root / "coco/annotations/instances_all.json").read_text())
    return sum(a["category_id"] == LESION for a in coco["annotations"])


def _pseudo_label(phantoms, out: Path, *extra: str) -> int:
    root = phantoms["root"]
    return cli.main([
        "pseudo-label", str(root / "ph" / "dicom"), "--replay", str(phantoms["recording"]),
        "--out", str(out), "--outputs", "bsi", "--no-progress", "--writers", "0", *extra,
    ])  # fmt: skip


def test_pseudo_label_keeps_what_the_validation_thresholds_trust(phantoms, tmp_path):
    root, out = phantoms["root"], tmp_path / "pl"
    val = root / "coco/annotations/instances_all.json"
    assert _pseudo_label(phantoms, out, "--val-json", str(val)) == 0
    chosen = json.loads((out / "thresholds.json").read_text())
    assert chosen["target_precision"] == 0.9 and chosen["match_iou"] == 0.5
    lesion = chosen["per_class"]["lesion"]
    # six false lesions at 0.30-0.35 would pull precision below 0.9: they fall below the cut
    assert chosen["thresholds"]["lesion"] >= 0.6 and lesion["precision"] >= 0.9
    assert lesion["ground_truth"] == phantoms["n_truth_lesions"]

    coco = json.loads((out / "pseudo_labels.json").read_text())
    assert len(coco["images"]) == 3 and all(img["model_made"] for img in coco["images"])
    lesions = [a for a in coco["annotations"] if a["category_id"] == LESION]
    assert len(lesions) == phantoms["n_truth_lesions"]  # every true lesion, no false one
    assert all(a["model_made"] is True for a in coco["annotations"])
    assert all(a["score"] >= chosen["thresholds"]["lesion"] - 1e-3 for a in lesions)
    for img in coco["images"]:  # beside the merged image, flagged, under a pseudonymous key
        assert (out / img["file_name"]).is_file()
        labelme = load_labelme(out / img["labelme_file"])
        assert labelme.model_made and all(s.model_made for s in labelme.shapes)
    assert "phantom_" not in (out / "pseudo_labels.json").read_text()


def test_pseudo_label_resumes_with_the_same_thresholds_and_refuses_others(phantoms, tmp_path):
    out = tmp_path / "pl"
    given = tmp_path / "given.json"
    # kidneys null, the bladder left out: neither is pseudo-labelled (the bones must be, or the
    # scans fail quality control, and those are left out)
    bones = ["skull", "spine", "chest", "pelvis", "femurs", "humerus_AR", "humerus_AL",
             "humerus_PR", "humerus_PL"]  # fmt: skip
    given.write_text(json.dumps({**dict.fromkeys(bones, 0.5), "lesion": 0.5, "kidney": None}))
    assert _pseudo_label(phantoms, out, "--thresholds", str(given)) == 0
    coco = json.loads((out / "pseudo_labels.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    found = {names[a["category_id"]] for a in coco["annotations"]}
    assert len(coco["images"]) == 3 and found == {*bones, "lesion"}
    assert _pseudo_label(phantoms, out, "--thresholds", str(out / "thresholds.json")) == 0
    given.write_text(json.dumps({"lesion": 0.8}))
    assert _pseudo_label(phantoms, out, "--thresholds", str(given)) == 2


def test_pseudo_label_names_a_bad_validation_file(phantoms, tmp_path, caplog):
    bad = tmp_path / "val.json"
    bad.write_text("{}")
    assert _pseudo_label(phantoms, tmp_path / "pl", "--val-json", str(bad)) == 2
    assert str(bad) in caplog.text


# -- the training mix -------------------------------------------------------------------------
def _dicts(n: int, tag: str) -> list[dict]:
    return [{"file_name": f"{tag}{i}.png", "annotations": [{"iscrowd": 0}]} for i in range(n)]


@pytest.mark.parametrize(("ratio", "pseudo_count"), [(0.25, 2), (0.5, 6), (0.75, 18), (0.0, 0)])
def test_the_mix_holds_the_stated_share_of_pseudo_labelled_samples(ratio, pseudo_count):
    labelled, pseudo = _dicts(6, "l"), _dicts(4, "p")
    mix = mix_pseudo_labelled(labelled, pseudo, ratio, seed=1)
    drawn = [d for d in mix if d["file_name"].startswith("p")]
    assert len(mix) - len(drawn) == 6 and len(drawn) == pseudo_count
    uses = [sum(d is p for d in drawn) for p in pseudo]
    assert max(uses) - min(uses) <= 1  # whole permutations: each as often as the count allows


def test_the_mix_is_the_same_for_a_seed_and_differs_between_seeds():
    labelled, pseudo = _dicts(6, "l"), _dicts(20, "p")
    names = [
        [d["file_name"] for d in mix_pseudo_labelled(labelled, pseudo, 0.5, seed)]
        for seed in (1, 1, 2)
    ]
    assert names[0] == names[1] and names[0] != names[2]


def test_ratio_one_is_pseudo_labels_alone_and_outside_zero_one_is_an_error():
    assert pseudo_sample_count(5, 3, 1.0) == 3
    assert all(d["file_name"].startswith("p") for d in mix_pseudo_labelled(
        _dicts(5, "l"), _dicts(3, "p"), 1.0, 0))  # fmt: skip
    with pytest.raises(DatasetError, match="PSEUDO_RATIO"):
        pseudo_sample_count(5, 3, 1.5)


def _tiny_sets(root: Path) -> tuple[Path, Path]:
    """A labelled COCO layout of 6 scans and a pseudo-labelled COCO file of 4 beside its
    images, as ``pseudo-label`` writes one."""
    masks = [_box(64, 48, 5, 20, 10, 30), _box(64, 48, 25, 60, 20, 28)]
    scans = [np.full((64, 48), 30 + i, np.uint8) for i in range(6)]
    annotations = [
        {"image_id": i + 1, "category_id": c, "segmentation": mask_to_polygons(m),
         "bbox": mask_to_bbox(m), "area": float(m.sum()), "iscrowd": 0}
        for i in range(6) for c, m in zip((SKULL, SPINE), masks, strict=True)
    ]  # fmt: skip
    labelled = write_coco_layout(root / "coco", scans, annotations,
                                 {"train": [1, 2, 3, 4, 5, 6], "test": [1]})  # fmt: skip
    pseudo_dir = root / "pseudo"
    (pseudo_dir / "scans").mkdir(parents=True)
    images = []
    for i in range(4):
        Image.fromarray(np.full((64, 48), 90 + i, np.uint8)).save(pseudo_dir / f"scans/p{i}.png")
        images.append({"id": i + 1, "file_name": f"scans/p{i}.png", "height": 64, "width": 48,
                       "model_made": True})  # fmt: skip
    anns = [{**a, "id": k + 1, "model_made": True, "score": 0.9}
            for k, a in enumerate(a for a in annotations if a["image_id"] <= 4)]  # fmt: skip
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in ((1, "skull"), (2, "spine"))],
    }
    (pseudo_dir / "pseudo_labels.json").write_text(json.dumps(coco))
    return labelled, pseudo_dir / "pseudo_labels.json"


def test_config_keys_mix_the_pseudo_set_into_training_deterministically(tmp_path):
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.torchvision.trainer import InfiniteMappedDicts

    root, pseudo = _tiny_sets(tmp_path)
    yaml = tmp_path / "leaf.yaml"  # through YAML as well as through opts
    yaml.write_text(f"_BASE_: {CPU_CONFIG}\nDATASETS:\n  PSEUDO_RATIO: 0.25\n")
    opts = [
        "MODEL.ENGINE",
        "torchvision",
        "BSI.DATASET_ROOT",
        str(root),
        "DATASETS.TRAIN",
        "('bsi_train',)",
        "DATASETS.PSEUDO",
        str(pseudo),
        "SEED",
        "3",
    ]
    cfg = setup_cfg(str(yaml), opts)
    assert cfg.DATASETS.PSEUDO == str(pseudo) and cfg.DATASETS.PSEUDO_RATIO == 0.25
    register_all(root)
    mix = training_dataset_dicts(cfg)
    assert sum(bool(d.get("model_made")) for d in mix) == 2 and len(mix) == 8
    assert [d["file_name"] for d in training_dataset_dicts(cfg)] == [d["file_name"] for d in mix]
    # one pass of the torchvision engine's sampler sees the same share
    sampler = iter(InfiniteMappedDicts(mix, dict, seed=3, rank=0, world=1))
    one_pass = [next(sampler) for _ in mix]
    assert sum(bool(d.get("model_made")) for d in one_pass) == 2
    assert all(a["model_made"] for d in mix if d.get("model_made") for a in d["annotations"])


def test_a_missing_pseudo_set_is_an_error_naming_it(tmp_path):
    from bsi_d2.config import setup_cfg

    root, _ = _tiny_sets(tmp_path)
    register_all(root)
    opts = ["MODEL.ENGINE", "torchvision", "DATASETS.TRAIN", "('bsi_train',)",
            "DATASETS.PSEUDO", "nowhere.json"]  # fmt: skip
    cfg = setup_cfg(str(CPU_CONFIG), opts)
    with pytest.raises(DatasetError, match="nowhere.json"):
        training_dataset_dicts(cfg)


def tiny_training(engine: str, root: Path, out: Path) -> list[str]:
    """Overrides for a 2-iteration training of a tiny model on ``root``'s train split."""
    return ["MODEL.ENGINE", engine, "MODEL.DEVICE", "cpu", "BSI.DATASET_ROOT", str(root),
            "OUTPUT_DIR", str(out), "DATASETS.TRAIN", "('bsi_train',)",
            "DATASETS.TEST", "()", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM",
            "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
            "INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "INPUT.BSI_AUG.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
            "SOLVER.WARMUP_ITERS", "0"]  # fmt: skip


def test_train_runs_on_the_mix_and_the_flags_set_the_keys(tmp_path):
    import argparse

    from bsi_d2.commands.train import pseudo_opts
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.torchvision import trainer as tv_trainer

    root, pseudo = _tiny_sets(tmp_path)
    args = argparse.Namespace(opts=["SEED", "1"], pseudo=str(pseudo), pseudo_ratio=0.5)
    opts = pseudo_opts(args)
    assert opts[-4:] == ["DATASETS.PSEUDO", str(pseudo), "DATASETS.PSEUDO_RATIO", "0.5"]
    cfg = setup_cfg(str(CPU_CONFIG), [*tiny_training("torchvision", root, tmp_path / "run"),
                                      "SOLVER.EPOCHS", "1", *opts])  # fmt: skip
    result = tv_trainer.train(cfg, log_period=1)
    # SOLVER.EPOCHS 1 is one pass over the mix: 6 labelled + 6 pseudo-labelled, batch 2
    assert result["iterations"] == 6 and Path(result["final_checkpoint"]).is_file()


@pytest.mark.detectron2
def test_detectron2_trains_on_the_same_mix(tmp_path, monkeypatch):
    """detectron2's train loader is built from the same labelled + pseudo-labelled list."""
    pytest.importorskip("detectron2", reason="detectron2 is not installed")
    from bsi_d2.config import setup_cfg
    from bsi_d2.data import datasets
    from bsi_d2.engine import get_engine

    root, pseudo = _tiny_sets(tmp_path)
    mixes = []

    def recorded(cfg, *args, **kwargs):
        dicts = real(cfg, *args, **kwargs)
        mixes.append(sum(bool(d.get("model_made")) for d in dicts))
        return dicts

    real = datasets.training_dataset_dicts
    monkeypatch.setattr(datasets, "training_dataset_dicts", recorded)
    cfg = setup_cfg(str(CPU_CONFIG), [*tiny_training("detectron2", root, tmp_path / "run"),
                                      "DATASETS.PSEUDO", str(pseudo),
                                      "DATASETS.PSEUDO_RATIO", "0.5"])  # fmt: skip
    get_engine(cfg).train(cfg, resume=False)
    assert (tmp_path / "run" / "model_final.pth").is_file()
    assert mixes and mixes[-1] == 6  # 6 labelled + 6 pseudo-labelled, as the torchvision mix
