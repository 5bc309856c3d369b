"""Labelme reading, rasterisation, grouping, image lookup and writing, on tiny hand-made files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsi_d2.io.labelme import (
    LABELME_VERSION,
    LabelmeError,
    LabelmeShape,
    NotLabelmeError,
    image_candidates,
    labelme_image,
    labelme_instances,
    labelme_shape,
    load_labelme,
    mask_shape,
    shape_to_mask,
    write_labelme,
)
from bsi_d2.structures.masks import mask_area, mask_to_bbox, polygons_to_mask
from bsi_d2.taxonomy import load_taxonomy

H, W = 48, 64


def _shape(points, shape_type="polygon", label="lesion", group_id=None, index=0, mask=None):
    return LabelmeShape(
        index, label, [tuple(map(float, p)) for p in points], shape_type, group_id, mask
    )


def _file(tmp_path: Path, shapes: list[dict], name="scan.json", **extra) -> Path:
    path = write_labelme(tmp_path / name, "scan.png", H, W, shapes)
    if extra:
        raw = json.loads(path.read_text())
        raw.update(extra)
        path.write_text(json.dumps(raw))
    return path


def _instances(tmp_path, shapes, **kwargs):
    return labelme_instances(load_labelme(_file(tmp_path, shapes)), **kwargs)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# -- rasterisation of each shape type -------------------------------------------------------------
def test_valid_polygon_is_exactly_pycocotools_rasterisation():
    points = [(3.2, 4.7), (40.5, 6.1), (33.3, 30.9), (8.8, 25.0)]
    mask = shape_to_mask(_shape(points), H, W)
    expected = polygons_to_mask([np.ravel(points).tolist()], H, W)
    assert mask.any()
    np.testing.assert_array_equal(mask, expected)


def test_rectangle_covers_its_box_in_coco_pixel_coordinates():
    # points in "wrong" order: labelme allows dragging a rectangle either way
    mask = shape_to_mask(_shape([(30, 15), (20, 5)], "rectangle"), H, W)
    expected = np.zeros((H, W), bool)
    expected[5:15, 20:30] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    "points",
    [[(10, 10)], [(10, 10), (12, 13), (34, 34)], [(10, 10), (12, 13), (34, 34), (10, 34)]],
)
def test_rectangle_with_other_than_two_points_is_an_error(points):
    # labelme draws the 2 x 3 px box of the first two; a box round all would cover 576 px
    shape = _shape(points, "rectangle")
    instances, (problem,) = labelme_instances(_labelme_of([shape]), height=H, width=W)
    assert instances == [] and (problem.severity, problem.shape) == ("error", 0)
    assert f"rectangle has {len(points)} point" in problem.message


def test_circle_becomes_a_close_polygon():
    centre, radius = np.array([30.0, 22.0]), 12.0
    shape = _shape([centre, centre + [radius, 0]], "circle")
    mask = shape_to_mask(shape, H, W)
    rows, cols = np.mgrid[:H, :W]
    disk = (cols + 0.5 - centre[0]) ** 2 + (rows + 0.5 - centre[1]) ** 2 <= radius**2
    assert abs(mask_area(mask) - np.pi * radius**2) < 0.03 * np.pi * radius**2
    assert (mask & disk).sum() / (mask | disk).sum() > 0.95
    (instance,), problems = labelme_instances(_labelme_of([shape]), height=H, width=W)
    assert instance.polygons is not None and len(instance.polygons[0]) // 2 >= 32
    assert problems == []


def _labelme_of(shapes):
    from bsi_d2.io.labelme import LabelmeFile

    return LabelmeFile(Path("mem.json"), list(shapes), "scan.png", None, H, W)


def test_mask_shape_round_trips_pixel_exact_with_its_hole(tmp_path):
    drawn = np.zeros((H, W), bool)
    drawn[10:30, 20:44] = True
    drawn[15:20, 25:30] = False  # a hole that a COCO polygon could not express
    drawn[40, 60] = True
    (instance,), problems = _instances(tmp_path, [mask_shape("kidney", drawn)])
    assert problems == []
    assert instance.polygons is None  # RLE
    np.testing.assert_array_equal(instance.mask(), drawn)
    assert instance.area == drawn.sum() and instance.bbox == mask_to_bbox(drawn)


@pytest.mark.parametrize(
    "shape_type, points",
    [("point", [(5, 5)]), ("line", [(1, 1), (20, 20)]), ("linestrip", [(1, 1), (9, 3), (20, 20)])],
)
def test_shapes_without_area_are_reported_and_skipped(tmp_path, shape_type, points):
    shapes = [
        labelme_shape("lesion", points, shape_type),
        labelme_shape("skull", [(2, 2), (10, 2), (10, 10)]),
    ]
    instances, problems = _instances(tmp_path, shapes)
    assert [i.label for i in instances] == ["skull"]
    assert [(p.severity, p.code, p.shape) for p in problems] == [("skipped", "not_an_area", 0)]


# -- grouping -------------------------------------------------------------------------------------
def test_shapes_sharing_label_and_group_id_form_one_instance(tmp_path):
    left = [(2, 2), (12, 2), (12, 12), (2, 12)]
    right = [(30, 2), (40, 2), (40, 12), (30, 12)]
    shapes = [
        labelme_shape("lesion", left, group_id=1),
        labelme_shape("Metastasis", right, group_id=1),  # alias of lesion: same class
        labelme_shape("skull", right, group_id=1),  # same group id, other class
        labelme_shape("lesion", [(2, 30), (12, 30), (12, 40)]),  # group null: own instance
        labelme_shape("lesion", [(30, 30), (40, 30), (40, 40)]),
    ]
    instances, problems = _instances(tmp_path, shapes)
    assert problems == []
    by_shapes = {i.shape_indices: i for i in instances}
    assert set(by_shapes) == {(0, 1), (2,), (3,), (4,)}
    merged = by_shapes[(0, 1)]
    assert merged.label == "lesion" and merged.group_id == 1 and len(merged.polygons) == 2
    expected = polygons_to_mask([np.ravel(left).tolist(), np.ravel(right).tolist()], H, W)
    np.testing.assert_array_equal(merged.mask(), expected)
    assert by_shapes[(2,)].category_id == load_taxonomy().by_name("skull").id


# -- repairs and bad shapes -----------------------------------------------------------------------
def test_self_intersecting_polygon_is_repaired_and_reported():
    bowtie = [(2, 2), (30, 30), (30, 2), (2, 30)]
    (instance,), problems = labelme_instances(_labelme_of([_shape(bowtie)]), height=H, width=W)
    assert [(p.severity, p.code) for p in problems] == [("repair", "made_valid")]
    assert len(instance.polygons) == 2  # two triangles
    assert 350 < instance.area < 420  # two triangles of 196 px each, less the rim


def test_polygon_whose_repair_leaves_a_hole_is_written_as_rle():
    keyhole = [
        (2, 2),
        (30, 2),
        (30, 30),
        (2, 30),
        (2, 10),
        (10, 10),
        (10, 20),
        (20, 20),
        (20, 10),
        (2, 10),
    ]
    (instance,), problems = labelme_instances(_labelme_of([_shape(keyhole)]), height=H, width=W)
    assert [p.code for p in problems] == ["made_valid"]
    assert instance.polygons is None
    mask = instance.mask()
    assert mask[5, 5] and not mask[15, 15]  # (row, col) inside the hole stays empty


def test_degenerate_polygon_is_dropped_and_reported():
    (problem,) = labelme_instances(
        _labelme_of([_shape([(1, 1), (5, 5), (9, 9)])]), height=H, width=W
    )[1]
    assert (problem.severity, problem.code) == ("repair", "degenerate")


def test_polygon_with_two_points_is_an_error():
    instances, (problem,) = labelme_instances(
        _labelme_of([_shape([(1, 1), (5, 5)])]), height=H, width=W
    )
    assert instances == [] and (problem.severity, problem.code, problem.shape) == (
        "error",
        "too_few_points",
        0,
    )


def test_slightly_outside_is_clipped_far_outside_is_an_error():
    slight = _shape([(50, 10), (W + 3, 10), (W + 3, 20), (50, 20)], label="skull", index=0)
    far = _shape([(10, 10), (20, 10), (20, H + 20)], label="spine", index=1)
    instances, problems = labelme_instances(_labelme_of([slight, far]), height=H, width=W)
    assert [i.label for i in instances] == ["skull"]
    expected = np.zeros((H, W), bool)
    expected[10:20, 50:] = True
    np.testing.assert_array_equal(instances[0].mask(), expected)
    assert max(max(p[0::2]) for p in instances[0].polygons) <= W
    codes = {(p.shape, p.severity, p.code) for p in problems}
    assert codes == {(0, "repair", "clipped"), (1, "error", "far_outside")}
    assert "beyond the 64 x 48 image" in next(p.message for p in problems if p.shape == 1)


# -- labels ---------------------------------------------------------------------------------------
def test_unknown_labels_error_skip_and_map(tmp_path):
    shapes = [
        labelme_shape("bone_mets", [(2, 2), (12, 2), (12, 12)]),
        labelme_shape("SKULL", [(20, 2), (30, 2), (30, 12)]),
    ]
    instances, problems = _instances(tmp_path, shapes)
    assert [i.label for i in instances] == ["skull"]  # aliases resolve case-insensitively
    assert [(p.severity, p.code, p.label) for p in problems] == [
        ("error", "unknown_label", "bone_mets")
    ]
    _, problems = _instances(tmp_path, shapes, unknown_labels="skip")
    assert [(p.severity, p.code) for p in problems] == [("skipped", "unknown_label")]
    instances, problems = _instances(tmp_path, shapes, label_map={"Bone_Mets": "lesion"})
    assert problems == [] and sorted(i.label for i in instances) == ["lesion", "skull"]


def test_ignore_labels_become_regions_or_are_dropped(tmp_path):
    shapes = [
        labelme_shape("__ignore__", [(2, 2), (12, 2), (12, 12)]),
        labelme_shape("_background_", [(20, 2), (30, 2), (30, 12)]),
    ]
    (region,), problems = _instances(tmp_path, shapes)
    assert region.is_ignore and region.category_id is None and region.area > 0
    assert [(p.code, p.severity) for p in problems] == [("background", "skipped")]
    instances, problems = _instances(tmp_path, shapes, ignore="drop")
    assert instances == [] and {p.code for p in problems} == {"background", "ignore_dropped"}


# -- reading --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("  \n", "empty file"),
        ('{"shapes": [', "invalid JSON"),
        ('{"shapes": {}, "imagePath": "a.png"}', "'shapes' must be a list"),
        ('{"shapes": [], "imagePath": "a.png", "imageHeight": "tall"}', "'imageHeight'"),
    ],
)
def test_unusable_files_raise_naming_the_file(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(LabelmeError, match=message) as err:
        load_labelme(path)
    assert str(path) in str(err.value)


def test_json_that_is_not_labelme_is_told_apart(tmp_path):
    path = tmp_path / "placement.json"
    path.write_text('{"view": "anterior", "row_offset": 3}')
    with pytest.raises(NotLabelmeError):
        load_labelme(path)


def test_malformed_shape_entries_are_listed_by_index(tmp_path):
    path = _file(tmp_path, [])
    raw = json.loads(path.read_text())
    raw["shapes"] = [
        {"label": "lesion", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"},
        {"label": "lesion", "points": [[1, "x"]], "shape_type": "polygon"},
        {"points": [[1, 1], [5, 1], [5, 5]]},
        {"label": "lesion", "points": [[1, 1], [5, 1], [5, 5]], "group_id": "a"},
    ]
    path.write_text(json.dumps(raw))
    labelme = load_labelme(path)
    assert [s.index for s in labelme.shapes] == [0]
    assert [(p.shape, p.code) for p in labelme.problems] == [
        (1, "bad_shape"),
        (2, "bad_shape"),
        (3, "bad_shape"),
    ]


def _repeat_key(path: Path, before: str, key: str, value) -> None:
    """Write ``key`` once more, just before the first ``before`` in the file's JSON text."""
    text = path.read_text()
    assert before in text
    path.write_text(text.replace(before, f"{json.dumps(key)}: {json.dumps(value)}, {before}", 1))


def test_a_repeated_shapes_key_makes_the_file_an_error(tmp_path):
    square = [(2, 2), (12, 2), (12, 12), (2, 12)]
    path = _file(tmp_path, [labelme_shape("lesion", square) for _ in range(30)])
    _repeat_key(path, '"imagePath"', "shapes", [labelme_shape("skull", square)])
    top_level = r"duplicate key 'shapes' \(2 times\) at the top level"
    with pytest.raises(LabelmeError, match=top_level) as err:
        load_labelme(path)  # read as JSON it keeps 1 shape: 30 of 31 would be lost
    assert str(path) in str(err.value)


def test_any_repeated_top_level_key_makes_the_file_an_error(tmp_path):
    path = _file(tmp_path, [labelme_shape("lesion", [(2, 2), (12, 2), (12, 12)])])
    _repeat_key(path, '"imageWidth"', "imageHeight", H * 2)
    with pytest.raises(LabelmeError, match=r"duplicate key 'imageHeight' \(2 times\) at the top"):
        load_labelme(path)


@pytest.mark.parametrize(
    "before, key, value, named",
    [
        ('"label": "spine"', "points", [[30, 30], [40, 30], [40, 40]], "'points'"),
        ('"label": "spine"', "label", "skull", "'label'"),
        ('"occluded"', "occluded", False, "'flags.occluded'"),
    ],
)
def test_a_repeated_key_inside_a_shape_makes_that_shape_an_error(
    tmp_path, before, key, value, named
):
    triangle = [(2, 2), (12, 2), (12, 12)]
    path = _file(
        tmp_path,
        [
            labelme_shape("skull", triangle),
            labelme_shape("spine", triangle, flags={"occluded": True}),
            labelme_shape("lesion", triangle),
        ],
    )
    _repeat_key(path, before, key, value)
    labelme = load_labelme(path)
    assert [s.index for s in labelme.shapes] == [0, 2]
    (problem,) = labelme.problems
    assert (problem.severity, problem.code, problem.shape) == ("error", "duplicate_key", 1)
    assert f"duplicate key {named}" in problem.message


# -- images ---------------------------------------------------------------------------------------
def test_image_found_by_windows_path_basename(tmp_path):
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "a.png")
    path = _file(tmp_path, [], imagePath="C:\\scans\\patient\\a.png")
    labelme = load_labelme(path)
    assert tmp_path / "a.png" in image_candidates(labelme)
    image = labelme_image(labelme)
    assert image.source == tmp_path / "a.png" and (image.height, image.width) == (H, W)


def test_relative_image_path_in_another_folder(tmp_path):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "img" / "a.png")
    path = _file(tmp_path, [], name="labels.json", imagePath="img\\a.png")
    assert labelme_image(load_labelme(path)).source == tmp_path / "img" / "a.png"


def test_embedded_16bit_image_data_keeps_its_pixels(tmp_path):
    counts = (np.arange(H * W).reshape(H, W) * 13 % 4000).astype(np.uint16)
    data = base64.b64encode(_png_bytes(counts)).decode()
    path = _file(tmp_path, [], imagePath="missing.png", imageData=data)
    image = labelme_image(load_labelme(path))
    assert image.source is None and image.mode.startswith("I;16") and image.suffix == ".png"
    written = image.write(tmp_path / "out" / "scan")
    with Image.open(written) as img:
        np.testing.assert_array_equal(np.asarray(img), counts)
    assert counts.max() > 255


def test_image_size_disagreeing_with_the_file_is_an_error(tmp_path):
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(tmp_path / "scan.png")
    with pytest.raises(LabelmeError, match=r"disagrees with the image.*49 x 64"):
        labelme_image(load_labelme(_file(tmp_path, [])))


def test_missing_and_unreadable_images_are_errors(tmp_path):
    path = _file(tmp_path, [])
    with pytest.raises(LabelmeError, match="image not found"):
        labelme_image(load_labelme(path))
    (tmp_path / "scan.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(LabelmeError, match="cannot read image"):
        labelme_image(load_labelme(path))


def test_counts_sibling_is_found(tmp_path):
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "scan.png")
    Image.fromarray(np.full((H, W), 300, np.uint16)).save(tmp_path / "scan.counts.png")
    assert labelme_image(load_labelme(_file(tmp_path, []))).counts_source == (
        tmp_path / "scan.counts.png"
    )


# -- writing --------------------------------------------------------------------------------------
def test_written_file_has_labelme_format_and_reads_back(tmp_path):
    drawn = np.zeros((H, W), bool)
    drawn[3:9, 4:7] = True
    shapes = [
        labelme_shape("skull", [(1, 2), (11, 2), (11, 9)], group_id=3, description="drawn by hand"),
        labelme_shape("lesion", [(20, 20), (25, 20)], "circle"),
        mask_shape("kidney", drawn),
    ]
    path = write_labelme(tmp_path / "w.json", "w.png", H, W, shapes)
    raw = json.loads(path.read_text())
    assert raw["version"] == LABELME_VERSION and raw["version"].startswith("5.")
    assert raw["flags"] == {} and raw["imageData"] is None and raw["imagePath"] == "w.png"
    assert (raw["imageHeight"], raw["imageWidth"]) == (H, W)
    for entry in raw["shapes"]:
        assert {"label", "points", "group_id", "shape_type", "flags", "description"} <= set(entry)
    back = load_labelme(path)
    assert [(s.label, s.shape_type, s.group_id) for s in back.shapes] == [
        ("skull", "polygon", 3),
        ("lesion", "circle", None),
        ("kidney", "mask", None),
    ]
    np.testing.assert_array_equal(shape_to_mask(back.shapes[2], H, W), drawn)


def test_labelme_itself_reads_our_files(tmp_path):
    labelme = pytest.importorskip("labelme", reason="labelme not installed")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "w.png")
    drawn = np.zeros((H, W), bool)
    drawn[3:9, 4:7] = True
    path = write_labelme(
        tmp_path / "w.json",
        "w.png",
        H,
        W,
        [labelme_shape("skull", [(1, 2), (11, 2), (11, 9)]), mask_shape("kidney", drawn)],
    )
    loaded = labelme.LabelFile(str(path))
    assert [s["label"] for s in loaded.shapes] == ["skull", "kidney"]
    np.testing.assert_array_equal(loaded.shapes[1]["mask"], drawn[3:9, 4:7])


def test_circle_reaching_far_beyond_the_image_is_an_error():
    huge = _shape([(30, 20), (30 + 2 * W, 20)], "circle")
    instances, (problem,) = labelme_instances(_labelme_of([huge]), height=H, width=W)
    assert instances == [] and (problem.severity, problem.code) == ("error", "far_outside")


def test_mask_whose_box_disagrees_is_placed_at_its_corner_and_reported(tmp_path):
    drawn = np.zeros((H, W), bool)
    drawn[5:9, 10:16] = True
    shape = mask_shape("kidney", drawn)
    shape["points"] = [[10.0, 5.0], [30.0, 30.0]]  # box larger than the 4 x 6 crop
    (instance,), problems = _instances(tmp_path, [shape])
    assert [(p.severity, p.code) for p in problems] == [("repair", "mask_box")]
    np.testing.assert_array_equal(instance.mask(), drawn)


def test_rle_helpers_agree_with_the_dense_mask_functions():
    from bsi_d2.structures.masks import merge_rles, polygons_to_rle, rle_area, rle_to_bbox
    from bsi_d2.structures.masks import rle_to_mask as decode

    polys = [[3.2, 4.7, 40.5, 6.1, 33.3, 30.9], [50, 40, 60, 40, 60, 47]]
    rle = polygons_to_rle(polys, H, W)
    dense = polygons_to_mask(polys, H, W)
    np.testing.assert_array_equal(decode(rle), dense)
    assert rle_area(rle) == mask_area(dense) and rle_to_bbox(rle) == mask_to_bbox(dense)
    other = np.zeros((H, W), bool)
    other[0:3, 0:3] = True
    from bsi_d2.structures.masks import mask_to_rle

    np.testing.assert_array_equal(decode(merge_rles([rle, mask_to_rle(other)])), dense | other)


def _payload(points_per_shape):
    shapes = [
        labelme_shape("spine é", points, "polygon", i, description="model score 0.900")
        for i, points in enumerate(points_per_shape)
    ]
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": "a.png",
            "imageData": None, "imageHeight": 950, "imageWidth": 512}  # fmt: skip


@pytest.mark.parametrize(
    "points_per_shape",
    [
        [],
        [[]],
        [[(1, 2)], [(3.0, 4.0), (5.0, 950.0), (0.0, -7.0)]],  # traced pixel corners
        [[(0.5, 1e-7), (1e16, -0.0), (123456789.125, 2.0**53), (-3.25, 1e300)]],  # any float
        [[(1.0, float("nan"))], [(float("inf"), 2.0)]],  # json writes NaN and Infinity
    ],
)
def test_labelme_text_is_json_dumps_indent_2(points_per_shape):
    from bsi_d2.io.labelme import labelme_json

    payload = _payload(points_per_shape)
    assert labelme_json(payload) == json.dumps(payload, indent=2)


def test_labelme_text_with_a_placeholder_in_a_label_is_json_dumps():
    from bsi_d2.io.labelme import labelme_json

    payload = _payload([[(1.0, 2.0)], [(3.0, 4.0)]])
    payload["shapes"][0]["label"] = "\x00points1\x00"
    assert labelme_json(payload) == json.dumps(payload, indent=2)
