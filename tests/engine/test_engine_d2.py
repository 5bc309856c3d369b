"""The detectron2 engine: dataset interop and a few real training steps of the CPU config."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.coco import write_coco_layout
from helpers.paths import CPU_CONFIG, REPO

pytestmark = pytest.mark.detectron2


def _box_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _tiny_scans(root: Path, n: int = 3, height: int = 950, width: int = 512) -> Path:
    """Merged-scan-shaped images with a skull, a spine and a lesion; the last is a negative."""
    rng = np.random.default_rng(0)
    scans, annotations = [], []
    for i in range(1, n + 1):
        scan = rng.poisson(2.0, (height, width)).astype(np.uint8)
        shapes = [(1, (100, 20, 160, 100)), (2, (120, 110, 140, 500))]
        if i < n:
            shapes.append((11, (125, 300, 140, 315)))
        for category_id, (x0, y0, x1, y1) in shapes if i < n else shapes[:2]:
            scan[y0:y1, x0:x1] = 60 if category_id != 11 else 200
            annotations.append(
                {
                    "image_id": i,
                    "category_id": category_id,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "segmentation": _box_poly(x0, y0, x1, y1),
                    "iscrowd": 0,
                }
            )
        scans.append(scan)
    every = list(range(1, n + 1))
    splits = {"all": every, "train": every, "val": [1]}
    return write_coco_layout(root, scans, annotations, splits)


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loader_matches_detectron2_load_coco_json(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from detectron2.data.datasets import load_coco_json

    from bsi_d2.data.datasets import load_bsi_coco_json

    root = _tiny_scans(tmp_path / "bsi", n=2, height=40, width=32)
    json_file = root / "annotations" / "instances_all.json"
    ours = load_bsi_coco_json(json_file, root / "images", None)
    theirs = load_coco_json(str(json_file), str(root / "images"), "bsi_interop_test")
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        assert a["file_name"] == b["file_name"] and a["image_id"] == b["image_id"]
        assert (a["height"], a["width"]) == (b["height"], b["width"])
        assert len(a["annotations"]) == len(b["annotations"])
        for x, y in zip(a["annotations"], b["annotations"], strict=True):
            assert x["category_id"] == y["category_id"]  # both contiguous
            assert x["bbox"] == y["bbox"] and x["bbox_mode"] == int(y["bbox_mode"])
            assert x["segmentation"] == y["segmentation"]


def test_adapter_builds_detectron2_instances(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from bsi_d2.data.datasets import load_bsi_coco_json
    from bsi_d2.data.mapper import BsiDatasetMapper
    from bsi_d2.engine.detectron2.trainer import Detectron2Sample

    root = _tiny_scans(tmp_path / "bsi", n=2, height=40, width=32)
    record = load_bsi_coco_json(root / "annotations" / "instances_all.json", root / "images", None)
    sample = Detectron2Sample(BsiDatasetMapper(is_train=True))(record[0])
    inst = sample["instances"]
    assert inst.image_size == (40, 32)
    assert inst.gt_masks.tensor.dtype.is_floating_point is False
    assert inst.gt_boxes.tensor.shape == (len(inst), 4)
    test_sample = Detectron2Sample(BsiDatasetMapper(is_train=False))(record[0])
    assert "instances" not in test_sample


def test_train_a_few_iterations_through_train_net(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    root = _tiny_scans(tmp_path / "bsi", n=3)
    out = tmp_path / "out"
    train_net = _train_net()
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            str(CPU_CONFIG),
            "BSI.DATASET_ROOT",
            str(root),
            "OUTPUT_DIR",
            str(out),
            "MODEL.ENGINE",
            "detectron2",
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.WARMUP_ITERS",
            "1",
            "SEED",
            "1",
        ]
    )
    result = train_net.launch(args)
    assert result["engine"] == "detectron2" and result["iterations"] == 2
    assert len(result["losses"]) == 2 and all(math.isfinite(v) for v in result["losses"])
    assert Path(result["weights"]).is_file()
    assert (out / "config.yaml").is_file()
    # DATASETS.TEST is bsi_val: scored at the end by bsi_d2's evaluator
    assert (out / "inference" / "bsi_val" / "evaluation.json").is_file()
    evaluation = result["evaluation"]["bsi_val"]
    assert evaluation["n_images"] == 1 and "pixel" in evaluation and "coco" in evaluation

    evaluated = train_net.main(
        train_net.argument_parser().parse_args(
            [
                "--config-file",
                str(CPU_CONFIG),
                "--eval-only",
                "BSI.DATASET_ROOT",
                str(root),
                "OUTPUT_DIR",
                str(out / "eval"),
                "MODEL.WEIGHTS",
                result["weights"],
            ]
        )
    )
    assert evaluated["engine"] == "detectron2" and evaluated["weights"] == result["weights"]
    assert evaluated["evaluation"]["bsi_val"]["n_images"] == 1


def _evaluation_lines(output: Path) -> list[dict]:
    lines = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    return [line for line in lines if "segm/AP" in line]


def test_both_engines_write_the_same_metrics_keys(tmp_path):
    # before: fractions under segm/per_class/<cls> (detectron2) vs percent under segm/AP-<cls>
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine import get_engine

    root = _tiny_scans(tmp_path / "bsi", n=3)
    keys, aps = {}, []
    for engine in ("detectron2", "torchvision"):
        out = tmp_path / engine
        cfg = setup_cfg(
            CPU_CONFIG,
            ["BSI.DATASET_ROOT", str(root), "OUTPUT_DIR", str(out), "MODEL.ENGINE", engine,
             "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SEED", "1",
             "DATASETS.TRAIN", "('bsi_train',)", "DATASETS.TEST", "('bsi_val',)"],
        )  # fmt: skip
        get_engine(cfg).train(cfg)
        lines = _evaluation_lines(out)
        keys[engine] = {k for line in lines for k in line if "/" in k}
        aps += [line["segm/AP"] for line in lines]
    assert keys["detectron2"] == keys["torchvision"]
    assert {"segm/AP", "segm/AP-skull", "pixel/skeleton/f1", "lesion/dice_pooled"} <= keys[engine]
    assert aps and all(0.0 <= v <= 1.0 for v in aps)  # fractions, not percent


def test_the_same_seed_trains_the_same_model(tmp_path):
    # before: engine.train (the demo's and k-fold's path) never applied SEED, so two runs of one
    # config drew different samplers and augmentation
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine import get_engine

    root = _tiny_scans(tmp_path / "bsi", n=3)
    losses = []
    for run in ("a", "b"):
        cfg = setup_cfg(
            CPU_CONFIG,
            ["BSI.DATASET_ROOT", str(root), "OUTPUT_DIR", str(tmp_path / run),
             "MODEL.ENGINE", "detectron2", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1",
             "SEED", "5", "DATASETS.TEST", "()"],
        )  # fmt: skip
        losses.append(get_engine(cfg).train(cfg)["losses"])
    assert losses[0] == losses[1] and len(losses[0]) == 3
