"""``mine-negatives``: a model's lesions on normal scans become hard negatives. The model is a
replay of phantoms without metastases whose benign look-alikes it calls lesions, so the hard
negatives it must give are known: the look-alikes' outlines."""

import json

import numpy as np
import pytest

from bsi_d2 import cli
from bsi_d2.data.datasets import load_bsi_coco_json
from bsi_d2.inference.negatives import MiningError, mine_negatives, scan_negatives
from bsi_d2.inference.replay import phantom_recording, save_recording
from bsi_d2.io.labelme import labelme_instances, load_labelme
from bsi_d2.phantom import generate_phantom, write_phantom
from bsi_d2.structures.instances import Instances
from bsi_d2.structures.masks import rle_to_mask
from bsi_d2.taxonomy import load_taxonomy

DEFAULT = load_taxonomy()
BENIGN = load_taxonomy("benign")
H, W = 40, 80
LESION, BENIGN_ID = DEFAULT.by_name("lesion").id, BENIGN.benign_class.id


def box(r0, r1, c0, c1):
    mask = np.zeros((H, W), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def instances(*items, taxonomy=BENIGN):
    ids = [taxonomy.by_name(name).id for name, _, _ in items]
    return Instances.from_masks(H, W, ids, [m for _, m, _ in items], [s for _, _, s in items])


def test_scan_negatives_merges_duplicates_keeps_views_and_leaves_decoy_uptake_out():
    found = instances(
        ("spine", box(5, 35, 10, 20), 0.99),
        ("spine", box(5, 35, 60, 70), 0.99),
        ("kidney", box(5, 15, 22, 30), 0.9),
        ("lesion", box(10, 14, 12, 16), 0.9),  # on the spine ...
        ("lesion", box(10, 14, 12, 17), 0.6),  # ... found twice
        ("lesion", box(10, 14, 64, 68), 0.8),  # ... and in the posterior view
        ("lesion", box(7, 10, 24, 27), 0.95),  # inside the kidney: decoy uptake, not mined
        ("lesion", box(30, 34, 30, 34), 0.3),  # below the threshold
        ("benign", box(9, 15, 11, 18), 0.7),  # the model's own benign call on the lesion
        ("benign", box(30, 34, 2, 6), 0.7),  # and one elsewhere
    )
    negatives, pseudo = scan_negatives(found, BENIGN)
    assert len(negatives) == 2  # one lesion, one instance per view
    assert negatives.masks[0].sum() == 4 * 5 and negatives.masks[0][:, 40:].sum() == 0
    assert negatives.masks[1].sum() == 16 and negatives.masks[1][:, :40].sum() == 0
    assert list(negatives.scores) == pytest.approx([0.9, 0.9])
    names = [BENIGN.by_id(c).name for c in pseudo.category_ids]
    assert names == ["spine", "spine", "kidney", "benign"]  # no lesion; the covered benign goes
    assert pseudo.masks[3][30:34, 2:6].all()


@pytest.fixture(scope="module")
def normal_scans(tmp_path_factory):
    """Two phantoms without metastases, and a recording of a model that calls each of their
    benign look-alikes a lesion (and finds every region and decoy)."""
    root = tmp_path_factory.mktemp("normal")
    phantoms = []
    for i in range(2):
        phantom = generate_phantom(i, 7, lesion_count=0, taxonomy=BENIGN, label_benign=True)
        write_phantom(phantom, root / "scans")
        phantoms.append(phantom)
    entries = phantom_recording(root / "scans", BENIGN)
    for entry in entries:
        entry["category_ids"] = [LESION if c == BENIGN_ID else c for c in entry["category_ids"]]
    save_recording(root / "model.jsonl", entries)
    lookalikes = sum(1 for p in phantoms for r in p.truth["instances"] if r["category_id"] == 13)
    assert lookalikes >= 2 and all(p.truth["lesion_count"] == 0 for p in phantoms)
    return root, phantoms


def run(root, out, *extra):
    argv = ["mine-negatives", str(root / "scans" / "dicom"), "--replay", str(root / "model.jsonl"),
            "--out", str(out), "--no-progress", *extra]  # fmt: skip
    return cli.main(argv)


def truth_benign(phantoms):
    return sorted(
        rle_to_mask(r["segmentation"]).sum()
        for p in phantoms
        for r in p.truth["instances"]
        if r["category_name"] == "benign"
    )


def test_mined_set_with_a_benign_taxonomy_labels_the_negatives_benign(normal_scans, tmp_path):
    root, phantoms = normal_scans
    out = tmp_path / "mined"
    assert run(root, out, "--opts", "BSI.TAXONOMY", "benign") == 0
    assert not (out / "taxonomy.yaml").exists()
    data = json.loads((out / "annotations" / "instances_negatives.json").read_text())
    negatives = [a for a in data["annotations"] if a.get("hard_negative")]
    assert {a["category_id"] for a in negatives} == {BENIGN_ID}
    # the look-alikes are isolated hot spots: each comes back as it was outlined
    assert sorted(a["area"] for a in negatives) == truth_benign(phantoms)
    assert all(a["model_made"] and 0.6 <= a["score"] < 1.0 for a in data["annotations"])
    assert not any(a["category_id"] == LESION for a in data["annotations"])
    assert all(img["has_lesion"] is False for img in data["images"])
    regions = [a for a in data["annotations"] if a["category_id"] <= 9]
    assert len(regions) == sum(
        1 for p in phantoms for r in p.truth["instances"] if r["category_id"] <= 9
    )
    dicts = load_bsi_coco_json(out / "annotations" / "instances_negatives.json", out / "images",
                               BENIGN)  # fmt: skip
    assert len(dicts) == 2 and all((out / "images" / img["file_name"]).is_file()
                                   for img in data["images"])  # fmt: skip
    summary = json.loads((out / "negatives.json").read_text())
    assert summary["negative_class"] == {"name": "benign", "id": 13}
    assert summary["hard_negatives"] == len(negatives)
    # the Labelme files hold the same instances, hard negatives described as such
    labelme = load_labelme(out / "labelme" / f"{data['images'][0]['file_name'][:-4]}.json")
    found, problems = labelme_instances(labelme, BENIGN)
    assert not [p for p in problems if p.severity == "error"]
    assert len(found) == sum(1 for a in data["annotations"] if a["image_id"] == 1)
    hard = [a for a in negatives if a["image_id"] == 1]
    assert sum(1 for inst in found if inst.category_id == BENIGN_ID) == len(hard)
    assert any("hard negative" in s.description for s in labelme.shapes)


def test_without_a_benign_class_a_hard_negative_class_is_added(normal_scans, tmp_path, capsys):
    root, phantoms = normal_scans
    out = tmp_path / "mined"
    assert run(root, out) == 0
    assert "BSI.TAXONOMY" in capsys.readouterr().out
    added = load_taxonomy(out / "taxonomy.yaml")
    cls = added.by_name("hard_negative")
    assert (cls.id, cls.kind) == (13, "decoy") and added.benign_class is None
    assert [c for c in added.classes if c.id <= 12] == list(DEFAULT.classes)
    data = json.loads((out / "annotations" / "instances_negatives.json").read_text())
    negatives = [a for a in data["annotations"] if a.get("hard_negative")]
    assert {a["category_id"] for a in negatives} == {13}
    assert sorted(a["area"] for a in negatives) == truth_benign(phantoms)
    with pytest.raises(Exception, match=r"category ids \[13\]"):
        load_bsi_coco_json(out / "annotations" / "instances_negatives.json", out / "images",
                           DEFAULT)  # fmt: skip
    assert len(load_bsi_coco_json(out / "annotations" / "instances_negatives.json",
                                  out / "images", added)) == 2  # fmt: skip
    # a rerun resumes the batch and mines the same set
    before = (out / "annotations" / "instances_negatives.json").read_bytes()
    assert run(root, out) == 0
    assert (out / "annotations" / "instances_negatives.json").read_bytes() == before


def test_a_folder_that_is_not_a_predict_output_is_named(tmp_path):
    with pytest.raises(MiningError, match=str(tmp_path / "nothing")):
        mine_negatives(tmp_path / "nothing", tmp_path / "out", DEFAULT)
