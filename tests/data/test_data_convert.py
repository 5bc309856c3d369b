"""Labelme folder -> COCO: layout, pixel-exact masks, 16-bit images, splits, and bad input."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bsi_d2.cli import main as cli_main
from bsi_d2.data.convert import convert_labelme_folder
from bsi_d2.io.labelme import labelme_instances, labelme_shape, load_labelme, mask_shape
from bsi_d2.structures.masks import mask_area, mask_to_bbox
from bsi_d2.taxonomy import load_taxonomy

H, W = 48, 64
SQUARE = [(2, 2), (12, 2), (12, 12), (2, 12)]


def _counts(seed: int) -> np.ndarray:
    """A 16-bit count image with values well above 255."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3000, size=(H, W), dtype=np.uint16)


def _scan(
    root: Path,
    rel: str,
    shapes: list[dict],
    *,
    counts: bool = False,
    image="file",
    image_path: str | None = None,
    **override,
) -> Path:
    """Write a Labelme file ``rel`` (and its 16-bit image) under ``root``."""
    from bsi_d2.io.labelme import write_labelme

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _counts(len(rel))
    if image == "file":
        Image.fromarray(pixels).save(path.with_suffix(".png"))
    if counts:
        Image.fromarray(pixels // 2).save(path.with_name(path.stem + ".counts.png"))
    write_labelme(path, image_path or path.with_suffix(".png").name, H, W, shapes)
    if image == "embedded" or override:
        raw = json.loads(path.read_text())
        if image == "embedded":
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            raw["imageData"] = base64.b64encode(buf.getvalue()).decode()
        raw.update(override)
        path.write_text(json.dumps(raw))
    return path


def _rich_shapes() -> list[dict]:
    drawn = np.zeros((H, W), bool)
    drawn[30:44, 40:60] = True
    drawn[34:38, 45:50] = False
    return [
        labelme_shape("skull", [(20, 2), (35, 2), (35, 14), (20, 14)]),
        labelme_shape("spine", [(2, 20), (12, 30)], "rectangle"),
        labelme_shape("lesion", [(25, 30), (30, 30)], "circle"),
        mask_shape("kidney", drawn),
        labelme_shape("lesion", SQUARE, group_id=4),
        labelme_shape("lesion", [(14, 2), (18, 2), (18, 6)], group_id=4),
        labelme_shape("pelvis", [(50, 2), (66, 2), (66, 12), (50, 12)]),  # slightly outside
        labelme_shape("femurs", [(40, 16), (60, 26), (60, 16), (40, 26)]),  # self-intersecting
        labelme_shape("__ignore__", [(2, 40), (10, 40), (10, 46)]),
        labelme_shape("lesion", [(5, 5)], "point"),
    ]


def _load(out: Path, name: str = "instances_all.json") -> dict:
    return json.loads((out / "annotations" / name).read_text())


def test_coco_loads_and_each_mask_equals_the_labelme_rasterisation(tmp_path):
    from pycocotools.coco import COCO

    src, out = tmp_path / "src", tmp_path / "out"
    _scan(src, "b/rich.json", _rich_shapes())
    _scan(src, "a/negative.json", [labelme_shape("skull", SQUARE)])
    _scan(src, "c/empty.json", [])
    report = convert_labelme_folder(src, out, workers=1)
    coco = COCO(str(out / "annotations" / "instances_all.json"))
    taxonomy = load_taxonomy()
    assert [img["file_name"] for img in coco.dataset["images"]] == [
        "a/negative.png",
        "b/rich.png",
        "c/empty.png",
    ]
    assert [img["id"] for img in coco.dataset["images"]] == [1, 2, 3]
    assert coco.dataset["categories"] == taxonomy.coco_categories()
    checked = 0
    for image in coco.dataset["images"]:
        labelme = load_labelme(src / image["labelme_file"])
        instances, _ = labelme_instances(labelme, taxonomy, height=H, width=W)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        things = [a for a in anns if not a["iscrowd"]]
        assert len(things) == len([i for i in instances if not i.is_ignore])
        for ann, inst in zip(things, [i for i in instances if not i.is_ignore], strict=True):
            decoded = coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(decoded, inst.mask())
            assert ann["category_id"] == inst.category_id
            assert ann["area"] == mask_area(decoded) and ann["bbox"] == mask_to_bbox(decoded)
            checked += 1
    assert checked == 8  # rich: 7 instances (group 4 merged); negative: 1; empty: 0
    rich = next(i for i in coco.dataset["images"] if i["file_name"] == "b/rich.png")
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[rich["id"]]))
    by_kind = {type(a["segmentation"]).__name__ for a in anns if not a["iscrowd"]}
    assert by_kind == {"list", "dict"}  # polygons where exact, RLE for the mask with a hole
    crowd = [a for a in anns if a["iscrowd"]]
    assert sorted(a["category_id"] for a in crowd) == taxonomy.ids
    assert all(isinstance(a["segmentation"]["counts"], str) for a in crowd)
    assert [img["has_lesion"] for img in coco.dataset["images"]] == [False, True, False]
    assert report.instances_per_class["lesion"] == 2 and report.ignore_regions == 1
    assert report.rle_instances == 1 and report.mask_format == "bitmask"
    assert {r["code"] for r in report.repairs} == {"clipped", "made_valid"}
    assert [s["code"] for s in report.skipped_shapes] == ["not_an_area"]
    assert report.errors == [] and report.exit_code == 0


def test_images_keep_their_bytes_and_bit_depth_and_counts_travel_along(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _scan(src, "p1/scan.json", [labelme_shape("lesion", SQUARE)], counts=True)
    _scan(src, "p2/embedded.json", [], image="embedded", imagePath="gone.png")
    _scan(src, "p3/win.json", [], image_path="C:\\Users\\x\\Desktop\\win.png")
    report = convert_labelme_folder(src, out, workers=1)
    assert report.errors == [] and report.counts_written == 1
    images = {img["labelme_file"]: img for img in _load(out)["images"]}
    scan = images["p1/scan.json"]
    assert (out / "images" / scan["file_name"]).read_bytes() == (src / "p1/scan.png").read_bytes()
    assert scan["counts_file_name"] == "p1/scan.counts.png"
    counts_out = out / "images" / scan["counts_file_name"]
    assert counts_out.read_bytes() == (src / "p1/scan.counts.png").read_bytes()
    for rel in ("p1/scan.json", "p2/embedded.json", "p3/win.json"):
        with Image.open(out / "images" / images[rel]["file_name"]) as img:
            pixels = np.asarray(img)
        assert pixels.dtype == np.uint16 and pixels.max() > 255
        np.testing.assert_array_equal(pixels, _counts(len(rel)))
    assert images["p2/embedded.json"]["file_name"] == "p2/embedded.png"
    assert "counts_file_name" not in images["p3/win.json"]


def test_tiff_is_copied_jpeg_is_stored_lossless_and_absolute_paths_work(tmp_path):
    src, out, elsewhere = tmp_path / "src", tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    counts = _counts(1)
    Image.fromarray(counts).save(elsewhere / "far.tif")
    _scan(src, "abs.json", [], image="none", image_path=str(elsewhere / "far.tif"))
    gray = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)
    Image.fromarray(gray).save(src / "photo.jpg", quality=80)
    _scan(src, "photo.json", [], image="none", image_path="photo.jpg")
    report = convert_labelme_folder(src, out, workers=1)
    assert report.errors == []
    images = {img["labelme_file"]: img["file_name"] for img in _load(out)["images"]}
    assert images == {"abs.json": "abs.tif", "photo.json": "photo.png"}
    assert (out / "images/abs.tif").read_bytes() == (elsewhere / "far.tif").read_bytes()
    with Image.open(src / "photo.jpg") as jpeg, Image.open(out / "images/photo.png") as png:
        assert png.format == "PNG" and png.mode == jpeg.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), np.asarray(jpeg))


def test_category_ids_come_from_the_taxonomy_file(tmp_path):
    taxonomy = {
        "name": "two",
        "classes": [
            {"id": 9, "name": "lesion", "kind": "lesion", "labels": ["met"]},
            {"id": 3, "name": "bone", "kind": "other"},
        ],
    }
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(taxonomy))
    src, out = tmp_path / "src", tmp_path / "out"
    _scan(src, "s.json", [labelme_shape("bone", SQUARE), labelme_shape("MET", SQUARE)])
    convert_labelme_folder(src, out, taxonomy=tmp_path / "two.yaml", workers=1)
    coco = _load(out)
    assert [c["id"] for c in coco["categories"]] == [3, 9]
    assert [a["category_id"] for a in coco["annotations"]] == [3, 9]
    assert coco["images"][0]["has_lesion"] is True


def _population(src: Path, n: int = 20) -> list[bool]:
    """n scans, every fourth with a lesion, the rest negatives (some without any shape)."""
    has_lesion = []
    for i in range(n):
        shapes = [labelme_shape("skull", SQUARE)] if i % 2 else []
        if i % 4 == 0:
            shapes.append(labelme_shape("lesion", [(30, 30), (36, 30), (36, 36)]))
        _scan(src, f"scan_{i:02d}.json", shapes)
        has_lesion.append(i % 4 == 0)
    return has_lesion


def test_fixed_split_and_folds_keep_negatives_and_are_reproducible(tmp_path):
    src = tmp_path / "src"
    _population(src)
    out = tmp_path / "out"
    report = convert_labelme_folder(src, out, folds=5, seed=1, stratify="lesion", workers=1)
    assert report.splits == {"train": 16, "val": 2, "test": 2}
    assert report.mask_format == "polygon"
    every = {img["file_name"] for img in _load(out)["images"]}
    assert len(every) == 20  # negatives, even shape-less ones, are kept
    parts = [
        {i["file_name"] for i in _load(out, f"instances_{s}.json")["images"]}
        for s in ("train", "val", "test")
    ]
    assert set.union(*parts) == every and sum(len(p) for p in parts) == 20
    tests = []
    for k in range(5):
        fold = {s: _load(out, f"fold{k}/instances_{s}.json") for s in ("train", "val", "test")}
        assert [len(fold[s]["images"]) for s in ("train", "val", "test")] == [12, 4, 4]
        assert sum(i["has_lesion"] for i in fold["test"]["images"]) == 1  # stratified: 5 / 5
        ann_images = {a["image_id"] for a in fold["test"]["annotations"]}
        assert ann_images <= {i["id"] for i in fold["test"]["images"]}
        tests += [i["file_name"] for i in fold["test"]["images"]]
    assert sorted(tests) == sorted(every)
    again = tmp_path / "again"
    convert_labelme_folder(src, again, folds=5, seed=1, stratify="lesion", workers=1)
    for k in range(5):
        name = f"fold{k}/instances_test.json"
        assert (out / "annotations" / name).read_bytes() == (
            again / "annotations" / name
        ).read_bytes()


def test_a_rerun_with_fewer_folds_leaves_no_stale_folds(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _population(src, 6)
    convert_labelme_folder(src, out, folds=5, workers=1)
    convert_labelme_folder(src, out, folds=3, workers=1)
    assert sorted(
        p.parent.name for p in (out / "annotations").glob("fold*/instances_test.json")
    ) == ["fold0", "fold1", "fold2"]


def test_process_pool_gives_the_same_output(tmp_path):
    src = tmp_path / "src"
    _population(src, 18)
    convert_labelme_folder(src, tmp_path / "serial", workers=1)
    convert_labelme_folder(src, tmp_path / "pool", workers=2)
    for name in ("instances_all.json", "instances_train.json"):
        assert (tmp_path / "serial/annotations" / name).read_bytes() == (
            tmp_path / "pool/annotations" / name
        ).read_bytes()


def _bad_folder(src: Path) -> None:
    _scan(src, "good.json", [labelme_shape("lesion", SQUARE)])
    (src / "invalid.json").write_text('{"shapes": [')
    (src / "empty.json").write_text("")
    _scan(src, "missing.json", [labelme_shape("skull", SQUARE)], image="none")
    _scan(src, "size.json", [labelme_shape("skull", SQUARE)], imageHeight=H * 2)
    _scan(
        src,
        "unknown.json",
        [
            labelme_shape("skull", SQUARE),
            labelme_shape("tumor", SQUARE),
            labelme_shape("tumor", SQUARE),
            labelme_shape("RIBS", SQUARE),
        ],
    )
    _scan(
        src,
        "short.json",
        [labelme_shape("spine", [(1, 1), (5, 5)]), labelme_shape("spine", SQUARE)],
    )
    _scan(src, "far.json", [labelme_shape("chest", [(1, 1), (90, 1), (90, 9)])])
    (src / "sidecar.json").write_text('{"view": "anterior"}')
    Image.fromarray(np.zeros((H, W), np.uint8)).save(src / "broken.png")
    (src / "broken.png").write_bytes((src / "broken.png").read_bytes()[:40])
    _scan(src, "broken.json", [], image="none", imagePath="broken.png")


def test_bad_input_is_reported_by_file_and_shape_and_the_rest_converted(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _bad_folder(src)
    report = convert_labelme_folder(src, out, workers=1)
    errors = {(e["file"], e["shape"]): e["message"] for e in report.errors}
    assert "invalid JSON" in errors[("invalid.json", None)]
    assert errors[("empty.json", None)] == "empty file"
    assert "image not found" in errors[("missing.json", None)]
    assert "cannot read image" in errors[("broken.json", None)]
    assert "disagrees with the image" in errors[("size.json", None)]
    assert "'tumor' is not in taxonomy" in errors[("unknown.json", 1)]
    assert ("unknown.json", 2) in errors
    assert "needs at least 3" in errors[("short.json", 0)]
    assert "beyond the 64 x 48 image" in errors[("far.json", 0)]
    assert len(errors) == 9
    assert report.unknown_labels == {"tumor": 2}
    assert report.skipped_files == [
        {"file": "sidecar.json", "message": "not a Labelme file: no 'shapes' and no 'imagePath'"}
    ]
    converted = {i["labelme_file"]: i["id"] for i in _load(out)["images"]}
    assert sorted(converted) == ["far.json", "good.json", "short.json", "unknown.json"]
    # ids are positions in sorted order, so a broken file does not shift the others
    assert converted["good.json"] == 4 and converted["unknown.json"] == 10
    per_image = {}
    for ann in _load(out)["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert per_image == {
        converted["good.json"]: 1,
        converted["unknown.json"]: 2,
        converted["short.json"]: 1,
    }
    assert report.exit_code == 0
    saved = json.loads((out / "conversion_report.json").read_text())
    assert len(saved["errors"]) == 9 and saved["files_read"] == 10


def test_cli_strict_exits_non_zero_but_still_writes(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _bad_folder(src)
    assert cli_main(["convert", str(src), "--out", str(out), "--workers", "1"]) == 0
    assert cli_main(["convert", str(src), "--out", str(out), "--strict", "--workers", "1"]) == 1
    assert len(_load(out)["images"]) == 4
    printed = capsys.readouterr().out
    assert "errors: 9" in printed and "'tumor' x2" in printed and "empty.json" in printed


def test_cli_map_skip_and_drop_options(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _scan(
        src,
        "s.json",
        [
            labelme_shape("tumor", SQUARE),
            labelme_shape("odd", SQUARE),
            labelme_shape("__ignore__", [(30, 30), (40, 30), (40, 40)]),
        ],
    )
    args = [
        "convert",
        str(src),
        "--out",
        str(out),
        "--map",
        "Tumor=lesion",
        "--unknown-labels",
        "skip",
        "--ignore",
        "drop",
        "--split",
        "1,0,0",
        "--strict",
        "--workers",
        "1",
    ]
    assert cli_main(args) == 0
    coco = _load(out)
    assert [a["category_id"] for a in coco["annotations"]] == [11]
    report = json.loads((out / "conversion_report.json").read_text())
    assert {s["code"] for s in report["skipped_shapes"]} == {"unknown_label", "ignore_dropped"}
    assert report["splits"] == {"train": 1, "val": 0, "test": 0}
    assert cli_main(["convert", str(src), "--out", str(out), "--map", "tumor=nothing"]) == 2
    assert cli_main(["convert", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def _repeat_key(path: Path, before: str, key: str, value) -> None:
    """Write ``key`` once more, just before the first ``before`` in the file's JSON text."""
    text = path.read_text()
    assert before in text
    path.write_text(text.replace(before, f"{json.dumps(key)}: {json.dumps(value)}, {before}", 1))


def test_repeated_json_keys_are_errors_by_file_and_shape_and_fail_strict(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _scan(src, "good.json", [labelme_shape("lesion", SQUARE)])
    twice_shapes = _scan(src, "twice_shapes.json", [labelme_shape("lesion", SQUARE)] * 30)
    _repeat_key(twice_shapes, '"imagePath"', "shapes", [labelme_shape("skull", SQUARE)])
    triangle = [(30, 30), (40, 30), (40, 40)]
    shapes = [labelme_shape(name, SQUARE) for name in ("skull", "spine", "pelvis")]
    _repeat_key(_scan(src, "twice_points.json", shapes), '"label": "spine"', "points", triangle)
    report = convert_labelme_folder(src, out, workers=1)
    errors = {(e["file"], e["shape"]): e["message"] for e in report.errors}
    assert set(errors) == {("twice_points.json", 1), ("twice_shapes.json", None)}
    top_level = errors[("twice_shapes.json", None)]
    assert "duplicate key 'shapes' (2 times) at the top level" in top_level
    assert "duplicate key 'points'" in errors[("twice_points.json", 1)]
    coco = _load(out)
    converted = {i["labelme_file"]: i["id"] for i in coco["images"]}
    assert sorted(converted) == ["good.json", "twice_points.json"]
    kept = [
        a["category_id"]
        for a in coco["annotations"]
        if a["image_id"] == converted["twice_points.json"]
    ]
    taxonomy = load_taxonomy()
    assert kept == [taxonomy.by_name("skull").id, taxonomy.by_name("pelvis").id]
    assert cli_main(["convert", str(src), "--out", str(out), "--workers", "1"]) == 0
    assert cli_main(["convert", str(src), "--out", str(out), "--strict", "--workers", "1"]) == 1
    printed = capsys.readouterr().out
    assert "error: twice_shapes.json: duplicate key 'shapes'" in printed
    assert "error: twice_points.json shape 1: duplicate key 'points'" in printed


def test_rectangle_with_three_points_is_reported_not_boxed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    corners = [(10, 10), (12, 13)]  # labelme draws this 2 x 3 px box
    _scan(src, "r.json", [labelme_shape("lesion", [*corners, (34, 34)], "rectangle")])
    report = convert_labelme_folder(src, out, workers=1, strict=True)
    assert _load(out)["annotations"] == []  # not the 24 x 24 px box round all three points
    (error,) = report.errors
    assert (error["file"], error["shape"]) == ("r.json", 0)
    assert "rectangle has 3 points" in error["message"] and report.exit_code == 1


@pytest.mark.parametrize("content", ["nothing", "only other JSON"])
def test_input_without_labelme_files_exits_non_zero_and_writes_nothing(tmp_path, caplog, content):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    if content == "only other JSON":
        (src / "placement.json").write_text('{"view": "anterior"}')
        Image.fromarray(np.zeros((H, W), np.uint8)).save(src / "scan.png")
    assert cli_main(["convert", str(src), "--out", str(out), "--workers", "1"]) == 2
    assert not out.exists()
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(src) in record.getMessage() and "no Labelme files" in record.getMessage()
    assert "\n" not in record.getMessage()
    with pytest.raises(ValueError, match="no Labelme files"):
        convert_labelme_folder(src, out, workers=1)


def test_a_folder_where_every_file_failed_exits_non_zero(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "invalid.json").write_text('{"shapes": [')
    _scan(src, "missing.json", [labelme_shape("skull", SQUARE)], image="none")
    (src / "placement.json").write_text('{"view": "anterior"}')
    # exit 1 even without --strict
    assert cli_main(["convert", str(src), "--out", str(out), "--workers", "1"]) == 1
    printed = capsys.readouterr().out
    assert "no Labelme file could be converted" in printed and "invalid.json" in printed
    saved = json.loads((out / "conversion_report.json").read_text())
    assert saved["files_converted"] == 0 and len(saved["errors"]) == 2


def test_output_folder_inside_the_source_and_hidden_folders_are_not_read(tmp_path):
    src = tmp_path / "src"
    _scan(src, "s.json", [labelme_shape("lesion", SQUARE)])
    _scan(src, ".ipynb_checkpoints/s-checkpoint.json", [labelme_shape("lesion", SQUARE)])
    convert_labelme_folder(src, src / "coco", workers=1)
    report = convert_labelme_folder(src, src / "coco", workers=1)
    assert report.files_read == 1 and report.skipped_files == []


@pytest.mark.detectron2
def test_detectron2_loads_the_output(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed")
    from detectron2.data.datasets import load_coco_json

    src, out = tmp_path / "src", tmp_path / "out"
    _scan(src, "rich.json", _rich_shapes())
    _scan(src, "neg.json", [])
    convert_labelme_folder(src, out, workers=1)
    dicts = load_coco_json(
        str(out / "annotations/instances_all.json"),
        str(out / "images"),
        dataset_name="bsi_d2_convert_test",
    )
    assert [Path(d["file_name"]).name for d in dicts] == ["neg.png", "rich.png"]
    rich = dicts[1]
    things = [a for a in rich["annotations"] if not a.get("iscrowd")]
    assert len(things) == 7
    assert all(Path(d["file_name"]).is_file() for d in dicts)
    # RLE instances (the kidney mask with a hole) need detectron2's bitmask format
    from detectron2.data.detection_utils import annotations_to_instances

    gt = annotations_to_instances(things, (H, W), mask_format="bitmask")
    expected, _ = labelme_instances(load_labelme(src / "rich.json"), height=H, width=W)
    expected = [i for i in expected if not i.is_ignore]
    for mask, inst in zip(gt.gt_masks.tensor.numpy(), expected, strict=True):
        np.testing.assert_array_equal(mask, inst.mask())


def test_files_saved_by_labelme_itself_convert(tmp_path):
    labelme = pytest.importorskip("labelme", reason="labelme not installed")
    utils = labelme.utils
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    display = (np.arange(H * W).reshape(H, W) % 200).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(display).save(buf, format="PNG")
    crop = np.zeros((6, 8), np.uint8)
    crop[1:5, 2:7] = 1

    def shape(label, points, shape_type, mask=None):
        return {
            "label": label,
            "points": points,
            "group_id": None,
            "description": "",
            "shape_type": shape_type,
            "flags": {},
            "mask": None if mask is None else utils.img_arr_to_b64(mask),
        }

    labelme.LabelFile().save(
        str(src / "drawn.json"),
        [
            shape("kidney", [(30, 20), (37, 25)], "mask", crop),
            shape("skull", [(2, 2), (20, 12)], "rectangle"),
            shape("lesion", [(40, 10), (44, 10)], "circle"),
            shape("lesion", [(5, 40)], "point"),
        ],
        "C:\\annotator\\drawn.png",  # positional: labelme 5 and 6 name these differently
        H,
        W,
        buf.getvalue(),
    )
    report = convert_labelme_folder(src, out, workers=1)
    assert report.errors == [] and [s["code"] for s in report.skipped_shapes] == ["not_an_area"]
    coco = _load(out)
    with Image.open(out / "images" / coco["images"][0]["file_name"]) as img:
        np.testing.assert_array_equal(np.asarray(img), display)
    from bsi_d2.structures.masks import segmentation_to_mask

    kidney = segmentation_to_mask(coco["annotations"][0]["segmentation"], H, W)
    expected = np.zeros((H, W), bool)
    expected[20:26, 30:38] = crop.astype(bool)
    np.testing.assert_array_equal(kidney, expected)
    assert [a["category_id"] for a in coco["annotations"]] == [10, 1, 11]
