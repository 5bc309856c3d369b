"""BsiDatasetMapper on hand-made images and dataset dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bsi_d2.config import get_cfg
from bsi_d2.data.augment import AugmentationRanges, masks_to_boxes
from bsi_d2.data.mapper import BsiDatasetMapper, ImageReadError, contiguous_flip_map
from bsi_d2.structures.masks import mask_to_rle
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()
C = TAX.id_to_contiguous  # taxonomy id -> contiguous id


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def _record(file_name, height, width, annotations=None):
    record = {"file_name": file_name, "image_id": 7, "height": height, "width": width}
    if annotations is not None:
        record["annotations"] = annotations
    return record


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_reads_16_bit_png_unclipped(tmp_path):
    counts = np.zeros((10, 8), np.uint16)
    counts[3, 4] = 1000
    counts[5, 2] = 300
    path = _png(tmp_path / "counts.png", counts)
    assert Image.open(path).mode.startswith("I;16")
    sample = BsiDatasetMapper(is_train=False)(_record(path, 10, 8))
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (3, 10, 8)
    assert image[0, 3, 4] == 1000.0 and image[0, 5, 2] == 300.0
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert "instances" not in sample  # no annotations in the dict


def test_counts_intensity_reads_the_counts_file(tmp_path):
    display = _png(tmp_path / "scan.png", np.full((6, 5), 12, np.uint8))
    counts = _png(tmp_path / "scan.counts.png", np.full((6, 5), 4000, np.uint16))
    record = {**_record(display, 6, 5), "counts_file_name": counts}
    assert BsiDatasetMapper(is_train=False)(record)["image"].max() == 12.0
    assert BsiDatasetMapper(is_train=False, image_format="counts")(record)["image"].min() == 4000.0
    np.save(tmp_path / "raw.npy", np.full((6, 5), 70000.0, np.float32))
    record["counts_file_name"] = str(tmp_path / "raw.npy")
    assert BsiDatasetMapper(is_train=False, image_format="counts")(record)["image"].max() == 70000
    with pytest.raises(ImageReadError, match="no counts_file_name"):
        BsiDatasetMapper(is_train=False, image_format="counts")(_record(display, 6, 5))


def test_instances_from_polygons_and_rle(tmp_path):
    path = _png(tmp_path / "scan.png", np.full((12, 16), 9, np.uint8))
    lesion = np.zeros((12, 16), bool)
    lesion[8:10, 11:14] = True
    crowd = np.zeros((12, 16), bool)
    crowd[0:2, 0:2] = True
    anns = [
        {
            "category_id": C[1],
            "segmentation": _poly(2, 2, 6, 5),
            "iscrowd": 0,
            "bbox": [0, 0, 1, 1],
            "bbox_mode": 1,
        },
        {"category_id": C[11], "segmentation": mask_to_rle(lesion), "iscrowd": 0},
        {"category_id": C[10], "segmentation": mask_to_rle(crowd), "iscrowd": 1},
    ]
    sample = BsiDatasetMapper(is_train=False)(_record(path, 12, 16, anns))
    inst = sample["instances"]
    assert inst["classes"].tolist() == [C[1], C[11]]  # crowd region is not an instance
    assert inst["masks"].dtype == torch.uint8 and inst["masks"].shape == (2, 12, 16)
    # boxes come from the masks, not from the (wrong) bbox field
    assert inst["boxes"][1].tolist() == [11.0, 8.0, 14.0, 10.0]
    assert inst["boxes"].dtype == torch.float32
    assert int(inst["masks"][1].sum()) == 6
    assert sample["height"] == 12 and sample["width"] == 16 and sample["image_id"] == 7


def test_negative_sample_has_zero_instances(tmp_path):
    path = _png(tmp_path / "normal.png", np.full((6, 6), 3, np.uint8))
    sample = BsiDatasetMapper(is_train=True, augment=AugmentationRanges())(_record(path, 6, 6, []))
    inst = sample["instances"]
    assert inst["boxes"].shape == (0, 4) and inst["classes"].shape == (0,)
    assert inst["masks"].shape == (0, 6, 6)


def test_augmented_boxes_match_augmented_masks(tmp_path):
    image = np.zeros((64, 48), np.uint8)
    image[20:44, 14:26] = 200
    path = _png(tmp_path / "scan.png", image)
    anns = [{"category_id": C[2], "segmentation": _poly(14, 20, 26, 44), "iscrowd": 0}]
    mapper = BsiDatasetMapper(
        is_train=True, augment=AugmentationRanges(), rng=np.random.default_rng(3)
    )
    for _ in range(5):
        sample = mapper(_record(path, 64, 48, anns))
        masks = sample["instances"]["masks"].numpy()
        assert sample["image"].shape == (3, 64, 48)
        np.testing.assert_array_equal(sample["instances"]["boxes"].numpy(), masks_to_boxes(masks))
        bright = sample["image"][0].numpy() > 100
        overlap = (bright & (masks[0] > 0)).sum() / (masks[0] > 0).sum()
        assert overlap > 0.85
        assert sample["image"].max() <= 255.0  # 8-bit source: brightness clipped at its range


def test_instance_pushed_out_of_the_image_is_dropped(tmp_path):
    path = _png(tmp_path / "scan.png", np.zeros((64, 64), np.uint8))
    anns = [
        {"category_id": C[11], "segmentation": _poly(0, 0, 2, 2), "iscrowd": 0},
        {"category_id": C[1], "segmentation": _poly(20, 20, 40, 40), "iscrowd": 0},
    ]
    zoom = AugmentationRanges(rotation=(0.0, 0.0), scale=(1.1, 1.1), brightness=(1.0, 1.0))
    sample = BsiDatasetMapper(is_train=True, augment=zoom)(_record(path, 64, 64, anns))
    assert sample["instances"]["classes"].tolist() == [C[1]]
    assert sample["instances"]["masks"].shape[0] == 1


def test_flip_swaps_views_and_remaps_classes(tmp_path):
    merged = np.zeros((20, 16), np.uint16)
    merged[:, :8] = 100  # anterior half
    merged[:, 8:] = 500  # posterior half
    path = _png(tmp_path / "merged.png", merged)
    anns = [
        {"category_id": C[4], "segmentation": _poly(1, 4, 4, 9), "iscrowd": 0},  # humerus_AR
        {"category_id": C[7], "segmentation": _poly(12, 4, 15, 9), "iscrowd": 0},  # humerus_PL
        {"category_id": C[1], "segmentation": _poly(2, 0, 6, 3), "iscrowd": 0},  # skull
    ]
    mapper = BsiDatasetMapper(
        is_train=True, hflip=True, hflip_prob=1.0, flip_map=contiguous_flip_map(TAX)
    )
    sample = mapper(_record(path, 20, 16, anns))
    name = TAX.thing_classes
    assert [name[c] for c in sample["instances"]["classes"].tolist()] == [
        "humerus_PR",
        "humerus_AL",
        "skull",
    ]
    image = sample["image"][0].numpy()
    assert (image[:, :8] == 500).all() and (image[:, 8:] == 100).all()
    masks = sample["instances"]["masks"].numpy()
    assert masks[0][:, 8:].any() and not masks[0][:, :8].any()  # now in the posterior half
    assert masks[1][:, :8].any() and not masks[1][:, 8:].any()


def test_flip_without_a_map_is_refused():
    with pytest.raises(ValueError, match="flip_map"):
        BsiDatasetMapper(is_train=True, hflip=True)


def test_resize_shortest_edge(tmp_path):
    path = _png(tmp_path / "scan.png", np.zeros((950, 512), np.uint8))
    anns = [{"category_id": C[1], "segmentation": _poly(100, 100, 300, 200), "iscrowd": 0}]
    sample = BsiDatasetMapper(is_train=False, min_size=256, max_size=512)(
        _record(path, 950, 512, anns)
    )
    assert sample["image"].shape == (3, 475, 256)
    assert (sample["height"], sample["width"]) == (950, 512)  # outputs scale back to these
    np.testing.assert_allclose(sample["instances"]["boxes"][0].numpy(), [50, 50, 151, 101], atol=1)


def test_from_config():
    cfg = get_cfg(subset=True)
    cfg.INPUT.BSI_AUG.HFLIP = True
    cfg.INPUT.BSI_AUG.ROTATION = (-2.0, 2.0)
    cfg.INPUT.MIN_SIZE_TRAIN = (512,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1024
    train = BsiDatasetMapper.from_config(cfg, is_train=True)
    assert train.augment == AugmentationRanges(rotation=(-2.0, 2.0))
    assert train.hflip and train.flip_map[C[4]] == C[6] and train.flip_map[C[1]] == C[1]
    assert train.min_size == (512,) and train.max_size == 1024
    test = BsiDatasetMapper.from_config(cfg, is_train=False)
    assert test.augment is None and not test.hflip


def test_bad_images_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png"):
        BsiDatasetMapper(is_train=False)(_record(str(tmp_path / "missing.png"), 4, 4))
    path = _png(tmp_path / "small.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageReadError, match=r"small\.png.*4 x 4.*5 x 4"):
        BsiDatasetMapper(is_train=False)(_record(path, 5, 4))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        BsiDatasetMapper(is_train=False)(_record(str(broken), 4, 4))


def test_map_image_matches_the_file_path(tmp_path):
    array = (np.arange(950 * 512) % 300).reshape(950, 512).astype(np.uint16)
    path = _png(tmp_path / "scan.png", array)
    mapper = BsiDatasetMapper(is_train=False, min_size=256, max_size=512)
    from_file = mapper(_record(path, 950, 512))["image"]
    in_memory = mapper.map_image(array)
    assert torch.equal(from_file, in_memory["image"]) and from_file.shape == (3, 475, 256)
    assert (in_memory["height"], in_memory["width"]) == (950, 512)
    with pytest.raises(ImageReadError, match="grey"):
        mapper.map_image(np.zeros((4, 4, 3)))


def test_native_lesions_give_the_unresized_scan_and_a_lesion_target(tmp_path):
    scan = np.zeros((950, 512), np.uint8)
    scan[300:310, 40:50] = 200
    path = _png(tmp_path / "scan.png", scan)
    anns = [
        {"category_id": C[1], "segmentation": _poly(100, 100, 300, 200), "iscrowd": 0},
        {"category_id": C[11], "segmentation": _poly(40, 300, 50, 310), "iscrowd": 0},
        {"category_id": C[1], "segmentation": _poly(400, 800, 420, 820), "iscrowd": 1},
    ]
    mapper = BsiDatasetMapper(
        is_train=True, min_size=256, max_size=512, native_lesions=True, lesion_classes=[C[11]]
    )
    sample = mapper(_record(path, 950, 512, anns))
    assert sample["image"].shape == (3, 475, 256)  # Mask R-CNN's input, halved
    assert sample["image_native"].shape == (1, 950, 512)
    assert float(sample["image_native"][0, 305, 45]) == 200.0
    target = sample["lesion_target"].numpy()
    assert target.shape == (950, 512)
    assert (target == 1).sum() == 100 and target[305, 45] == 1
    assert (target == 255).sum() == 400 and target[810, 410] == 255  # crowd: ignored
    # the crowd region is not an instance, as without the head
    assert sample["instances"]["classes"].tolist() == [C[1], C[11]]


def test_native_lesions_follow_a_flip(tmp_path):
    path = _png(tmp_path / "scan.png", np.zeros((60, 40), np.uint8))
    anns = [{"category_id": C[11], "segmentation": _poly(2, 10, 6, 14), "iscrowd": 0}]
    mapper = BsiDatasetMapper(
        is_train=True,
        hflip=True,
        hflip_prob=1.0,
        flip_map=contiguous_flip_map(TAX),
        native_lesions=True,
        lesion_classes=[C[11]],
        rng=np.random.default_rng(0),
    )
    sample = mapper(_record(path, 60, 40, anns))
    target = sample["lesion_target"].numpy()
    assert target[10:14, 34:38].all() and target.sum() == 16
    mask = sample["instances"]["masks"][0].numpy().astype(bool)
    assert np.array_equal(mask, target == 1)


def test_lesion_architecture_switches_native_lesions_on():
    cfg = get_cfg(subset=True)
    assert not BsiDatasetMapper.from_config(cfg, is_train=True).native_lesions
    cfg.MODEL.META_ARCHITECTURE = "LesionRCNN"
    mapper = BsiDatasetMapper.from_config(cfg, is_train=False)
    assert mapper.native_lesions and mapper.lesion_classes == (C[11],)
