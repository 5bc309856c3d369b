"""The torchvision engine end to end on tiny synthetic scans: train, checkpoint, resume,
evaluate, predict and k-fold, all on CPU through the real data pipeline (COCO JSON, our dataset
catalog, BsiDatasetMapper)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.coco import write_coco_layout
from helpers.paths import CPU_CONFIG
from PIL import Image

from bsi_d2.structures.masks import mask_to_bbox, mask_to_polygons

HEIGHT, WIDTH = 128, 96
N_IMAGES = 6
# taxonomy ids (default taxonomy): skull, spine, lesion
SKULL, SPINE, LESION = 1, 2, 11


def _shapes(index: int) -> list[tuple[int, np.ndarray]]:
    """(category id, mask) of one synthetic scan: a skull ellipse, a spine bar, maybe a lesion."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    shift = index % 3 * 3
    skull = ((yy - 18 - shift) / 13.0) ** 2 + ((xx - 48) / 16.0) ** 2 <= 1.0
    spine = (yy >= 38 + shift) & (yy < 110) & (xx >= 42) & (xx < 54)
    shapes = [(SKULL, skull), (SPINE, spine)]
    if index % 2 == 0:
        lesion = ((yy - 80) ** 2 + (xx - 20 - shift) ** 2) <= 36
        shapes.append((LESION, lesion))
    return shapes


def make_dataset(root: Path, n_images: int = N_IMAGES, folds: int = 0) -> Path:
    """PNG scans + COCO instances files (polygons) in the converter's layout under ``root``."""
    scans, annotations = [], []
    rng = np.random.default_rng(0)
    for i in range(n_images):
        canvas = rng.poisson(2.0, (HEIGHT, WIDTH)).astype(np.float32)
        for category, mask in _shapes(i):
            canvas[mask] += {SKULL: 60, SPINE: 90, LESION: 200}[category]
        scans.append(np.clip(canvas, 0, 255).astype(np.uint8))
        for category, mask in _shapes(i):
            annotations.append(
                {
                    "image_id": i + 1,
                    "category_id": category,
                    "segmentation": mask_to_polygons(mask),
                    "bbox": mask_to_bbox(mask),
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": n} for c, n in ((1, "skull"), (2, "spine"), (11, "lesion"))]
    every = list(range(1, n_images + 1))
    splits = {"train": every, "test": every[:2]}
    for k in range(folds):
        test, val = [every[k % len(every)]], [every[(k + 1) % len(every)]]
        train = [i for i in every if i not in test + val]
        splits.update({f"fold{k}/train": train, f"fold{k}/val": val, f"fold{k}/test": test})
    return write_coco_layout(
        root, scans, annotations, splits, file_name="scan_{index:02d}.png", categories=categories
    )


def tiny_opts(root: Path, output: Path, **extra: object) -> list[str]:
    """KEY VALUE overrides that shrink the CPU leaf config to 128 x 96 scans."""
    opts: dict[str, object] = {
        "BSI.DATASET_ROOT": str(root),
        "OUTPUT_DIR": str(output),
        "DATASETS.TRAIN": "('bsi_train',)",
        "DATASETS.TEST": "('bsi_test',)",
        "MODEL.DEVICE": "cpu",
        "MODEL.ENGINE": "torchvision",  # detectron2 may be installed; this file tests the other
        "MODEL.PIXEL_MEAN": "[20.0, 20.0, 20.0]",
        "MODEL.PIXEL_STD": "[40.0, 40.0, 40.0]",
        "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.ANCHOR_GENERATOR.SIZES": "[[8], [16], [32], [64], [128]]",
        "MODEL.ROI_BOX_HEAD.FC_DIM": 64,
        "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
        "MODEL.ROI_MASK_HEAD.NUM_CONV": 1,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 64,
        "INPUT.MIN_SIZE_TRAIN": "(96,)",
        "INPUT.MAX_SIZE_TRAIN": 128,
        "INPUT.MIN_SIZE_TEST": 96,
        "INPUT.MAX_SIZE_TEST": 128,
        "INPUT.BSI_AUG.ENABLED": False,
        "DATALOADER.NUM_WORKERS": 0,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.BASE_LR": 0.01,
        "SOLVER.WARMUP_ITERS": 0,
        "SOLVER.MAX_ITER": 8,
        "SOLVER.CHECKPOINT_PERIOD": 4,
        "TEST.EVAL_PERIOD": 0,
        "SEED": 7,
    }
    opts.update(extra)
    return [str(v) for kv in opts.items() for v in kv]


def _cfg(root: Path, output: Path, **extra: object):
    from bsi_d2.config import setup_cfg

    return setup_cfg(str(CPU_CONFIG), tiny_opts(root, output, **extra))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tv_data") / "coco", folds=3)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> dict:
    """10 iterations on one fixed batch (the 2-image split, batch 2, no augmentation)."""
    from bsi_d2.engine.torchvision import trainer as tv_trainer

    output = tmp_path_factory.mktemp("tv_run")
    cfg = _cfg(dataset, output, **{"DATASETS.TRAIN": "('bsi_test',)", "SOLVER.MAX_ITER": 10})
    result = tv_trainer.train(cfg, log_period=1)
    return {"cfg": cfg, "output": output, "result": result}


def test_losses_are_finite_and_fall_on_a_fixed_batch(trained):
    from bsi_d2.engine.torchvision.trainer import read_metrics

    lines = [m for m in read_metrics(trained["output"]) if "total_loss" in m]
    assert [m["iteration"] for m in lines] == list(range(10))
    for line in lines:
        for key in ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"):
            assert np.isfinite(line[key])
        assert line["lr"] > 0 and line["time"] > 0 and line["data_time"] >= 0
    losses = [m["total_loss"] for m in lines]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_checkpoints_are_written_like_detectron2(trained):
    output = trained["output"]
    assert (output / "model_0000003.pth").is_file()
    assert (output / "model_0000007.pth").is_file()
    assert (output / "last_checkpoint").read_text() == "model_final.pth"
    assert trained["result"]["weights"] == str(output / "model_final.pth")


def test_checkpoint_loads_with_weights_only(trained):
    from bsi_d2.engine.checkpoint import load_checkpoint

    path = trained["output"] / "model_final.pth"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["engine"] == "torchvision" and raw["iteration"] == 9
    assert "MAX_ITER: 10" in raw["cfg"]
    assert raw["optimizer"]["state"], "momentum buffers are saved"
    assert load_checkpoint(path)["scheduler"]["last_epoch"] == 10


def test_resume_continues_at_the_right_iteration(dataset, tmp_path):
    from bsi_d2.engine.checkpoint import load_checkpoint
    from bsi_d2.engine.torchvision import trainer as tv_trainer

    extra = {"SOLVER.WARMUP_ITERS": 5, "SOLVER.CHECKPOINT_PERIOD": 2, "DATASETS.TEST": "()"}
    cfg = _cfg(dataset, tmp_path, **{"SOLVER.MAX_ITER": 3}, **extra)
    first = tv_trainer.train(cfg, log_period=1)
    assert first["start_iter"] == 0
    cfg = _cfg(dataset, tmp_path, **{"SOLVER.MAX_ITER": 5}, **extra)
    second = tv_trainer.train(cfg, resume=True, log_period=1)
    assert second["start_iter"] == 3
    metrics = tv_trainer.read_metrics(tmp_path)
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0, 1, 2, 3, 4]
    lr = {m["iteration"]: m["lr"] for m in metrics}
    # the scheduler resumed mid-warm-up: a fresh one would start again at BASE_LR * 0.001;
    # iteration 3 runs at the rate the first run's last step set (its 3-iteration warm-up, as
    # detectron2 shortens WARMUP_ITERS to MAX_ITER), iteration 4 at the resumed config's
    assert lr[3] > 0.005
    assert lr[4] == pytest.approx(0.01 * tv_trainer.lr_factor(cfg, 4)) and lr[4] < 0.01
    assert load_checkpoint(tmp_path / "model_final.pth")["iteration"] == 4


def test_restore_brings_back_optimizer_state(trained):
    from bsi_d2.engine.checkpoint import load_checkpoint
    from bsi_d2.engine.torchvision import trainer as tv_trainer
    from bsi_d2.engine.torchvision.model import build_tv_model

    cfg = trained["cfg"]
    model = build_tv_model(cfg)
    optimizer = tv_trainer.build_optimizer(cfg, model)
    scheduler = tv_trainer.build_lr_scheduler(cfg, optimizer)
    path = trained["output"] / "model_final.pth"
    assert tv_trainer.restore(path, model, optimizer, scheduler) == 10
    saved = load_checkpoint(path)["optimizer"]["state"]
    restored = optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys()
    key = next(iter(saved))
    assert torch.equal(saved[key]["momentum_buffer"], restored[key]["momentum_buffer"])
    assert scheduler.last_epoch == 10


def test_evaluation_reports_per_class_numbers(trained):
    from bsi_d2.engine.torchvision import trainer as tv_trainer

    result = tv_trainer.evaluate(trained["cfg"], str(trained["output"] / "model_final.pth"))
    evaluation = result["evaluation"]["bsi_test"]
    per_class = evaluation["coco"]["segm"]["per_class"]
    for name in ("skull", "spine", "lesion"):
        assert isinstance(per_class[name], float)
    assert per_class["chest"] is None  # no ground truth for it
    assert set(evaluation["pixel"]["per_class"]) >= {"skull", "spine", "lesion"}
    assert evaluation["n_images"] == 2 and evaluation["failed"] == []
    assert (trained["output"] / "inference" / "bsi_test" / "evaluation.json").is_file()
    # the end-of-training evaluation went into metrics.json the way detectron2 logs it
    logged = [m for m in tv_trainer.read_metrics(trained["output"]) if "segm/AP" in m]
    assert logged and "segm/AP-skull" in logged[-1]


def test_predictor_returns_instances_on_the_input_size(trained, dataset):
    from bsi_d2.engine.predictor import build_mapper, build_predictor, predict_dataset
    from bsi_d2.structures.instances import Instances

    cfg = trained["cfg"].clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # a 10-iteration model scores low
    predictor = build_predictor(cfg, str(trained["output"] / "model_final.pth"))
    assert predictor.device == "cpu" and predictor.taxonomy.name == "bsi-default"
    scan = np.asarray(Image.open(dataset / "images" / "scan_00.png"))
    big = np.kron(scan, np.ones((2, 2), np.uint8)).astype(np.uint16)  # resized by the mapper
    results = predictor([scan, big])
    assert all(isinstance(r, Instances) for r in results)
    assert (results[0].height, results[0].width) == (HEIGHT, WIDTH)
    assert (results[1].height, results[1].width) == (2 * HEIGHT, 2 * WIDTH)
    for result in results:
        n = len(result)
        assert n > 0
        assert result.boxes.shape == (n, 4) and result.boxes.dtype == np.float32
        assert result.masks.shape == (n, result.height, result.width)
        assert result.masks.dtype == bool
        assert set(result.category_ids.tolist()) <= set(predictor.taxonomy.ids)
        assert (result.boxes[:, 2] <= result.width + 1e-3).all()
        assert (result.boxes[:, 3] <= result.height + 1e-3).all()
    # arrays and files go through the same conversion: identical predictions
    first = [d for d in _dicts("bsi_test") if d["file_name"].endswith("scan_00.png")]
    ((image_id, from_file),) = predict_dataset(predictor, first, build_mapper(cfg, False))[0]
    assert image_id == 1
    (alone,) = predictor([scan])
    np.testing.assert_allclose(from_file.scores, alone.scores, rtol=1e-5)
    np.testing.assert_array_equal(from_file.masks, alone.masks)


def _dicts(name: str) -> list[dict]:
    from bsi_d2.data.datasets import get_dataset_dicts

    return get_dataset_dicts(name)


def test_evaluation_goes_on_past_a_broken_image(trained, dataset, tmp_path):
    from bsi_d2.engine.predictor import Predictor, build_mapper, predict_dataset

    predictor = Predictor(trained["cfg"], str(trained["output"] / "model_final.pth"))
    dicts = _dicts("bsi_test")
    broken = dict(dicts[0], file_name=str(tmp_path / "missing.png"))
    mapper = build_mapper(trained["cfg"], False)
    predictions, failed = predict_dataset(predictor, [broken, dicts[1]], mapper)
    assert [image_id for image_id, _ in predictions] == [dicts[1]["image_id"]]
    assert failed and "missing.png" in failed[0]["file_name"] and failed[0]["error"]


def test_kfold_summarises_every_fold(dataset, tmp_path):
    from bsi_d2.workflows.kfold import run_kfold

    opts = tiny_opts(dataset, tmp_path, **{"SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_PERIOD": 0})
    summary = run_kfold(str(CPU_CONFIG), opts, folds=3)
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1, 2]
    assert [f["test_dataset"] for f in summary["per_fold"]] == [
        "bsi_fold0_test",
        "bsi_fold1_test",
        "bsi_fold2_test",
    ]
    skull = summary["per_class"]["skull"]["ap"]
    assert skull["n"] == 3 and skull["mean"] is not None and skull["sd"] is not None
    assert summary["per_class"]["chest"]["ap"]["n"] == 0
    assert summary["seed"] == 7
    assert (tmp_path / "fold2" / "model_final.pth").is_file()
    saved = json.loads((tmp_path / "kfold_summary.json").read_text())
    assert saved["per_class"]["skull"]["ap"]["mean"] == pytest.approx(skull["mean"])
    table = (tmp_path / "kfold_summary.md").read_text()
    assert "| skull |" in table and "±" in table


def test_kfold_without_fold_splits_names_what_is_missing(dataset, tmp_path):
    from bsi_d2.workflows.kfold import run_kfold

    with pytest.raises(ValueError, match="bsi_fold3_train"):
        run_kfold(str(CPU_CONFIG), tiny_opts(dataset, tmp_path), folds=5)
    from bsi_d2 import cli

    args = ["kfold", "--config-file", str(CPU_CONFIG), "--folds", "5"]
    assert cli.main([*args, *tiny_opts(dataset, tmp_path)]) == 2


def test_cli_train_runs_and_rejects_unsupported_keys(dataset, tmp_path, capsys, caplog):
    from bsi_d2 import cli

    opts = tiny_opts(dataset, tmp_path, **{"SOLVER.MAX_ITER": 1, "DATASETS.TEST": "()"})
    assert cli.main(["train", "--config-file", str(CPU_CONFIG), *opts]) == 0
    assert (tmp_path / "model_final.pth").is_file()
    assert '"engine": "torchvision"' in capsys.readouterr().out
    bad = tiny_opts(dataset, tmp_path, **{"MODEL.RESNETS.DEPTH": 152})
    assert cli.main(["train", "--config-file", str(CPU_CONFIG), *bad]) == 2
    assert "MODEL.RESNETS.DEPTH=152" in caplog.text


@pytest.mark.detectron2
def test_predictor_runs_the_detectron2_engine_too(dataset, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not installed")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from bsi_d2.engine.predictor import build_predictor

    cfg = _cfg(
        dataset,
        tmp_path,
        **{"MODEL.ENGINE": "detectron2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0},
    )
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("untrained")
    predictor = build_predictor(cfg, str(tmp_path / "untrained.pth"))
    assert predictor.engine.name == "detectron2"
    scan = np.asarray(Image.open(dataset / "images" / "scan_01.png"))
    (result,) = predictor([scan])
    assert (result.height, result.width) == (HEIGHT, WIDTH)
    assert result.masks.shape == (len(result), HEIGHT, WIDTH) and result.masks.dtype == bool
    assert set(result.category_ids.tolist()) <= set(predictor.taxonomy.ids)
