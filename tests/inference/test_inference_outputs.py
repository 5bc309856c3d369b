"""Writers of batch outputs: atomic files, the bsi.json record, the summary CSV, shards."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from bsi_d2.inference import outputs as out
from bsi_d2.inference.batch import in_shard
from bsi_d2.io.files import remove_temp_files
from bsi_d2.postprocess.analysis import analyse_scan
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()


def _analysis():
    masks = np.zeros((3, 10, 20), bool)
    masks[0, 0:5, 0:5] = True  # anterior skull
    masks[1, 0:5, 10:15] = True  # posterior skull
    masks[2, 0:2, 0:5] = True  # lesion on the anterior skull
    inst = Instances(10, 20, np.zeros((3, 4), np.float32), np.array([0.9, 0.8, 0.7], np.float32),
                     np.array([1, 1, 11]), masks)  # fmt: skip
    return analyse_scan(inst, np.ones((10, 20), np.float32), TAX)


def test_atomic_writes_leave_no_temp_files(tmp_path):
    out.atomic_write_json(tmp_path / "a.json", {"x": 1})
    out.atomic_write_json(tmp_path / "a.json", {"x": 2})
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red must stay red (OpenCV writes BGR)
    out.atomic_write_png(tmp_path / "o.png", rgb)
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert np.asarray(Image.open(tmp_path / "o.png"))[0, 0].tolist() == [200, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "o.png"]
    (tmp_path / ".b.json.tmp-123").write_text("half")
    assert remove_temp_files(tmp_path) == 1
    with pytest.raises(ValueError, match="uint8"):
        out.atomic_write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))


def test_record_has_exactly_the_schema_keys():
    a = _analysis()
    record = out.scan_record("c1", ["x.dcm"], {"engine": "torchvision"}, analysis=a.record)
    assert tuple(record) == out.RECORD_KEYS
    assert record["status"] == "ok" and record["overlay"] == "overlay.png"
    assert record["bsi"] == pytest.approx(0.2 * 18.4)  # skull: 0.4 anterior, 0 posterior
    assert record["lesions_by_region"] == {"skull": 1} and record["abnormal"] is True
    failed = out.scan_record("c2", ["y.png"], {}, error="preprocess: ValueError: bad")
    assert tuple(failed) == out.RECORD_KEYS
    assert failed["status"] == "failed" and failed["overlay"] is None
    assert failed["error"].startswith("preprocess")
    json.dumps(record, allow_nan=False)


def test_summary_csv_has_a_row_per_scan_and_per_bone_columns():
    a = _analysis()
    ok = out.scan_record("c1", ["x"], {}, analysis=a.record)
    failed = out.scan_record("c2", ["y"], {}, error="predict: boom")
    rows = list(csv.DictReader(io.StringIO(out.summary_csv([ok, failed]))))
    assert [r["key"] for r in rows] == ["c1", "c2"]
    assert float(rows[0]["bsi_skull"]) == pytest.approx(0.2 * 18.4)
    assert float(rows[0]["involvement_skull"]) == pytest.approx(0.2)
    assert rows[1]["status"] == "failed" and rows[1]["bsi_skull"] == ""
    assert rows[1]["error"] == "predict: boom"
    assert {f"involvement_{b}" for b in TAX.weights} <= set(rows[0])


def test_predictions_and_labelme_shapes(tmp_path):
    a = _analysis()
    kept = np.array([True, True, False])
    doc = out.predictions_document("c1", a.instances, TAX, a.views, kept)
    assert [i["class"] for i in doc["instances"]] == ["skull", "skull", "lesion"]
    assert [i["view"] for i in doc["instances"]] == ["anterior", "posterior", "anterior"]
    assert [i["kept"] for i in doc["instances"]] == [True, True, False]
    from bsi_d2.structures.masks import rle_to_mask

    np.testing.assert_array_equal(rle_to_mask(doc["instances"][2]["mask"]), a.instances.masks[2])
    out.atomic_write_json(tmp_path / "p.json", doc)
    back = out.read_predictions(tmp_path / "p.json")
    np.testing.assert_array_equal(back.masks, a.instances.masks)
    np.testing.assert_array_equal(back.category_ids, a.instances.category_ids)
    np.testing.assert_allclose(back.scores, a.instances.scores)
    # the file the batch writes: compact (the indenting encoder is Python's and was a fifth of
    # the pipeline's writing time), read back to the same instances
    files = out.ScanFiles(tmp_path, "c1", np.zeros((10, 20), np.uint8), a.instances, kept, a, TAX)
    out.write_predictions(files)
    text = (tmp_path / out.PREDICTIONS_FILE).read_text()
    assert text.count("\n") == 1 and ", " not in text and ": " not in text
    assert json.loads(text)["instances"] == json.loads(json.dumps(doc))["instances"]
    np.testing.assert_array_equal(out.read_predictions(tmp_path / out.PREDICTIONS_FILE).masks,
                                  a.instances.masks)  # fmt: skip
    shapes = out.labelme_shapes(a.instances, TAX)
    assert [(s["label"], s["group_id"]) for s in shapes] == [
        ("skull", 0),
        ("skull", 1),
        ("lesion", 2),
    ]


def test_shards_cover_every_key_once():
    keys = [f"c{i:04x}" for i in range(200)]
    owners = [[s for s in range(3) if in_shard(k, (s, 3))] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = np.bincount([o[0] for o in owners], minlength=3)
    assert sizes.min() > 40  # roughly even


def test_worker_shards_nest_inside_the_outer_shard():
    """--num-gpus N with --shard i/n: worker j takes j*n+i of N*n, a subset of i/n."""
    keys = [f"c{i:04x}" for i in range(120)]
    n, gpus = 3, 2
    for i in range(n):
        outer = {k for k in keys if in_shard(k, (i, n))}
        inner = [{k for k in keys if in_shard(k, (j * n + i, gpus * n))} for j in range(gpus)]
        assert inner[0] | inner[1] == outer and not inner[0] & inner[1]
