"""Data-set registration from the converter's layout, built by hand in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.coco import write_coco_layout

from bsi_d2.data import datasets as D
from bsi_d2.structures.masks import mask_to_rle, polygons_to_mask

H, W = 12, 16
SQUARE = [2.0, 2.0, 7.0, 2.0, 7.0, 6.0, 2.0, 6.0]  # x, y pairs


def _write_layout(root: Path, folds: bool = True) -> Path:
    """Three images (the third a negative sample) and a handful of annotation kinds."""
    scans = [np.full((H, W), 10 * i, np.uint8) for i in (1, 2, 3)]
    first = {"counts_file_name": "scan1.counts.png", "has_lesion": True}
    lesion_mask = np.zeros((H, W), bool)
    lesion_mask[8:11, 10:14] = True
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [2, 2, 5, 4],
            "area": 20,
            "segmentation": [SQUARE],
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 11,
            "bbox": [10, 8, 4, 3],
            "area": 12,
            "segmentation": mask_to_rle(lesion_mask),
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 2,
            "category_id": 4,
            "bbox": [0, 0, 4, 4],
            "area": 16,
            "segmentation": {"size": [H, W], "counts": [0, 4, 8, 4, H * W - 16]},
            "iscrowd": 0,
        },
        # two points only: dropped as detectron2 does
        {
            "id": 4,
            "image_id": 2,
            "category_id": 2,
            "bbox": [0, 0, 1, 1],
            "area": 1,
            "segmentation": [[0.0, 0.0, 1.0, 1.0]],
            "iscrowd": 0,
        },
        {
            "id": 5,
            "image_id": 2,
            "category_id": 10,
            "bbox": [8, 0, 4, 4],
            "area": 16,
            "segmentation": mask_to_rle(np.pad(np.ones((4, 4), bool), ((0, 8), (8, 4)))),
            "iscrowd": 1,
        },
    ]
    splits = {"all": [1, 2, 3], "train": [1, 3], "val": [2]}  # no test split on purpose
    if folds:
        splits.update({"fold0/train": [1, 3], "fold0/val": [2]})
    return write_coco_layout(root, scans, annotations, splits, image_fields={1: first})


def test_register_all_finds_splits_and_folds(tmp_path):
    root = _write_layout(tmp_path / "bsi")
    names = D.register_all(root)
    assert names == ["bsi_all", "bsi_fold0_train", "bsi_fold0_val", "bsi_train", "bsi_val"]
    assert "bsi_test" not in names
    meta = D.get_metadata("bsi_train")
    assert meta["thing_classes"][3] == "humerus_AR"
    assert meta["thing_dataset_id_to_contiguous_id"][11] == 10
    assert meta["json_file"] == str((root / "annotations" / "instances_train.json").resolve())
    assert meta["evaluator_type"] == "coco"


def test_loader_produces_detectron2_dicts(tmp_path):
    root = _write_layout(tmp_path / "bsi")
    D.register_all(root)
    dicts = {d["image_id"]: d for d in D.get_dataset_dicts("bsi_all")}
    assert sorted(dicts) == [1, 2, 3]
    first = dicts[1]
    assert Path(first["file_name"]).is_absolute() and Path(first["file_name"]).is_file()
    assert (first["height"], first["width"]) == (H, W)
    assert first["counts_file_name"] == str(root.resolve() / "images" / "scan1.counts.png")
    assert first["has_lesion"] is True
    skull, lesion = first["annotations"]
    assert skull["bbox_mode"] == 1 and skull["bbox"] == [2.0, 2.0, 5.0, 4.0]
    assert skull["category_id"] == 0 and skull["segmentation"] == [SQUARE]
    assert lesion["category_id"] == 10 and isinstance(lesion["segmentation"], dict)

    second = dicts[2]
    # the two-point polygon is gone; the crowd region stays, marked
    assert [a["category_id"] for a in second["annotations"]] == [3, 9]
    assert [a["iscrowd"] for a in second["annotations"]] == [0, 1]
    humerus = second["annotations"][0]["segmentation"]
    assert isinstance(humerus["counts"], str)  # uncompressed RLE was compressed
    assert dicts[3]["annotations"] == []  # negative sample kept


def test_polygon_survives_loading_pixel_for_pixel(tmp_path):
    root = _write_layout(tmp_path / "bsi")
    D.register_all(root)
    first = D.get_dataset_dicts("bsi_train")[0]
    mask = polygons_to_mask(first["annotations"][0]["segmentation"], H, W)
    assert mask.sum() == polygons_to_mask([SQUARE], H, W).sum() > 0


def test_root_from_environment(tmp_path, monkeypatch):
    root = _write_layout(tmp_path / "env_root", folds=False)
    monkeypatch.setenv(D.ENV_ROOT, str(root))
    names = D.register_all()
    assert "bsi_fold0_train" not in names
    assert D.get_metadata("bsi_val")["image_root"] == str(root.resolve() / "images")


def test_double_registration_is_a_noop_and_a_new_root_replaces(tmp_path):
    first = _write_layout(tmp_path / "a")
    D.register_all(first)
    loader = D._LOADERS["bsi_train"]
    D.register_all(first)
    assert D._LOADERS["bsi_train"] is loader
    second = _write_layout(tmp_path / "b")
    D.register_all(second)
    assert D._LOADERS["bsi_train"] is not loader
    assert D.get_dataset_dicts("bsi_train")[0]["file_name"].startswith(str(second.resolve()))


def test_unknown_category_names_the_file(tmp_path):
    root = _write_layout(tmp_path / "bsi")
    path = root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 99, "name": "urine_bag"})
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(D.DatasetError, match=r"instances_val\.json.*\[99\]"):
        D.load_bsi_coco_json(path, root / "images", None)


def test_missing_and_unregistered(tmp_path):
    with pytest.raises(D.DatasetError, match="not found"):
        D.load_bsi_coco_json(tmp_path / "nope.json", tmp_path, None)
    with pytest.raises(KeyError, match="bsi_nothing"):
        D.get_dataset_dicts("bsi_nothing")


@pytest.mark.detectron2
def test_registered_in_detectron2_too(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root = _write_layout(tmp_path / "bsi")
    D.register_all(root)
    assert len(DatasetCatalog.get("bsi_all")) == 3
    assert MetadataCatalog.get("bsi_all").thing_classes[-1] == "bladder"
