"""Configs: every YAML loads, unknown keys fail without detectron2, epochs become iterations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.coco import write_coco_layout

import bsi_d2
from bsi_d2.config import (
    add_bsi_config,
    declared_engine,
    detectron2_available,
    get_cfg,
    is_subset_cfg,
    iterations_per_epoch,
    resolve_epochs,
    setup_cfg,
)
from bsi_d2.engine import get_engine, prepare_training, resolve_engine

CONFIGS = Path(bsi_d2.__file__).parent / "configs"  # package data
YAMLS = sorted(CONFIGS.glob("*.yaml"))


def test_the_repository_configs_folder_is_the_package_data():
    assert (Path(__file__).resolve().parents[2] / "configs").resolve() == CONFIGS.resolve()


def test_the_expected_configs_exist():
    names = {p.name for p in YAMLS}
    assert {
        "Base-MaskRCNN-FPN-BSI.yaml",
        "mask_rcnn_R_50_FPN_100ep_bsi.yaml",
        "mask_rcnn_R_18_FPN_cpu_bsi.yaml",
    } <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_config_loads_without_detectron2(path):
    cfg = get_cfg(subset=True)
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.MASK_ON and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 12
    assert cfg.MODEL.WEIGHTS == ""  # no downloads on machines without network
    assert not cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS  # negative samples are kept


@pytest.mark.detectron2
@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_config_loads_with_detectron2(path):
    pytest.importorskip("detectron2", reason="detectron2 not installed; see README")
    cfg = get_cfg(subset=False)
    assert not is_subset_cfg(cfg)
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 12


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_bases_stay_inside_configs(path):
    base = (yaml.safe_load(path.read_text()) or {}).get("_BASE_")
    if base is not None:
        resolved = (path.parent / base).resolve()
        assert resolved.parent == CONFIGS and resolved.is_file()


def test_seed_000_leaf():
    cfg = get_cfg(subset=True)
    cfg.merge_from_file(str(CONFIGS / "mask_rcnn_R_50_FPN_100ep_bsi.yaml"))
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.EPOCHS) == (0.005, 4, 100)
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.DATASETS.TEST == ("bsi_val",)
    assert tuple(cfg.INPUT.BSI_AUG.ROTATION) == (-3.0, 3.0)
    assert tuple(cfg.INPUT.BSI_AUG.SCALE) == (0.9, 1.1)
    assert tuple(cfg.INPUT.BSI_AUG.BRIGHTNESS) == (0.8, 1.7)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (512,) and cfg.INPUT.MAX_SIZE_TRAIN >= 950  # native


def test_unknown_key_fails_without_detectron2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f'_BASE_: "{CONFIGS / "Base-MaskRCNN-FPN-BSI.yaml"}"\nMODEL:\n  RESNETS:\n'
        "    DEFORM_ON_PER_STAGE: [False, True, False, False]\n"
    )
    cfg = get_cfg(subset=True)
    with pytest.raises(KeyError, match="DEFORM_ON_PER_STAGE"):
        cfg.merge_from_file(str(bad))
    with pytest.raises(KeyError, match="MODEL.NO_SUCH_KEY"):
        setup_cfg(None, ["MODEL.ENGINE", "torchvision", "MODEL.NO_SUCH_KEY", "1"])


def test_bsi_keys_and_defaults():
    cfg = get_cfg(subset=True)
    assert cfg.MODEL.ENGINE == "auto" and cfg.BSI.TAXONOMY == "default"
    assert cfg.BSI.DATASET_ROOT == "" and cfg.BSI.SCORE_THRESH == 0.5
    assert cfg.BSI.CLASS_SCORE_THRESH == [] and cfg.BSI.COMBINE_VIEWS == "mean"
    assert cfg.SOLVER.EPOCHS == 0 and cfg.TEST.EVAL_PERIOD == 0
    assert cfg.INPUT.BSI_AUG.ENABLED and not cfg.INPUT.BSI_AUG.HFLIP
    assert cfg.INPUT.INTENSITY == "display"
    cfg.merge_from_list(["BSI.CLASS_SCORE_THRESH", "[['lesion', 0.3]]"])
    assert cfg.BSI.CLASS_SCORE_THRESH == [["lesion", 0.3]]


@pytest.mark.parametrize(
    "images,batch,epochs,steps,max_iter,iter_steps,warmup",
    [
        (10, 4, 100, (), 300, (), 3),  # ceil(10 / 4) = 3 iterations an epoch
        (8, 4, 2, (1,), 4, (2,), 2),
        (1, 4, 5, (2, 4, 9), 5, (2, 4), 1),  # a step past the last epoch is dropped
        (400, 4, 100, (67, 89), 10000, (6700, 8900), 100),
    ],
)
def test_epochs_to_iterations(images, batch, epochs, steps, max_iter, iter_steps, warmup):
    cfg = get_cfg(subset=True)
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SOLVER.EPOCHS = epochs
    cfg.SOLVER.EPOCH_STEPS = steps
    cfg.SOLVER.WARMUP_ITERS = 100
    resolve_epochs(cfg, images)
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert tuple(cfg.SOLVER.STEPS) == iter_steps
    assert cfg.SOLVER.WARMUP_ITERS == warmup


def test_epochs_zero_leaves_iterations_alone():
    cfg = get_cfg(subset=True)
    cfg.SOLVER.MAX_ITER = 123
    resolve_epochs(cfg, 10)
    assert cfg.SOLVER.MAX_ITER == 123
    with pytest.raises(ValueError, match="empty"):
        iterations_per_epoch(0, 4)


def test_add_bsi_config_on_a_foreign_node():
    from fvcore.common.config import CfgNode

    cfg = CfgNode({"MODEL": {}, "SOLVER": {}, "INPUT": {}})
    add_bsi_config(cfg)
    assert cfg.INPUT.BSI_AUG.BRIGHTNESS == (0.8, 1.7) and cfg.BSI.SCORE_THRESH == 0.5


def test_resolve_engine():
    cfg = get_cfg(subset=True)
    cfg.MODEL.ENGINE = "torchvision"
    assert resolve_engine(cfg) == "torchvision"
    cfg.MODEL.ENGINE = "auto"
    assert resolve_engine(cfg) == ("detectron2" if detectron2_available() else "torchvision")
    cfg.MODEL.ENGINE = "tensorflow"
    with pytest.raises(ValueError, match="MODEL.ENGINE 'tensorflow' is not one of auto, "):
        get_engine(cfg)


def test_the_engine_is_read_before_the_config_is_built(tmp_path):
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(f'_BASE_: "{CONFIGS / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"}"\n')
    assert declared_engine(leaf, []) == "auto"
    mid = tmp_path / "mid.yaml"
    mid.write_text('_BASE_: "leaf.yaml"\nMODEL:\n  ENGINE: torchvision\n')
    top = tmp_path / "top.yaml"
    top.write_text('_BASE_: "mid.yaml"\n')
    assert declared_engine(top, []) == "torchvision"  # through two _BASE_ levels
    assert declared_engine(top, ["MODEL.ENGINE", "detectron2"]) == "detectron2"  # opts win


# -- setup_cfg on a tiny registered data set --------------------------------------------------
def _tiny_layout(root: Path, n_train: int = 5) -> Path:
    blank = [np.zeros((8, 8), np.uint8)] * n_train
    return write_coco_layout(root, blank, file_name="{id}.png")


def test_prepare_training_resolves_epochs_from_the_registered_data(tmp_path):
    root = _tiny_layout(tmp_path / "bsi", n_train=5)
    cfg = setup_cfg(
        CONFIGS / "mask_rcnn_R_50_FPN_100ep_bsi.yaml",
        ["BSI.DATASET_ROOT", str(root), "MODEL.DEVICE", "cpu", "MODEL.ENGINE", "torchvision"],
    )
    assert cfg.SOLVER.MAX_ITER == 1000  # setup_cfg counts no image
    ready = prepare_training(cfg)
    assert ready.SOLVER.MAX_ITER == 100 * 2  # ceil(5 / 4) = 2 iterations an epoch
    assert ready.is_frozen() and is_subset_cfg(ready) and cfg.SOLVER.MAX_ITER == 1000


def test_setup_cfg_has_no_side_effects(tmp_path, monkeypatch):
    # before: it registered data sets, counted images, changed MODEL.DEVICE, loaded twice
    from bsi_d2.config.defaults import CfgNode
    from bsi_d2.data import datasets

    root = _tiny_layout(tmp_path / "fresh", n_train=3)
    loads = []
    real_merge = CfgNode.merge_from_file
    monkeypatch.setattr(
        CfgNode,
        "merge_from_file",
        lambda self, f, *a, **k: loads.append(f) or real_merge(self, f, *a, **k),
    )
    registered = set(datasets.registered_names())
    before = dict(datasets._REGISTERED)
    cfg = setup_cfg(
        CONFIGS / "mask_rcnn_R_50_FPN_100ep_bsi.yaml",
        ["BSI.DATASET_ROOT", str(root), "MODEL.DEVICE", "cuda:3", "MODEL.ENGINE", "torchvision"],
    )
    assert set(datasets.registered_names()) == registered and datasets._REGISTERED == before
    assert cfg.MODEL.DEVICE == "cuda:3" and cfg.SOLVER.MAX_ITER == 1000
    assert len(loads) == 1  # the YAML is read once
    assert cfg.MODEL.ENGINE == "torchvision" and cfg.is_frozen()


def test_setup_cfg_takes_num_classes_from_the_taxonomy(tmp_path):
    root = _tiny_layout(tmp_path / "bsi")
    taxonomy = tmp_path / "three.yaml"
    taxonomy.write_text(
        yaml.safe_dump(
            {
                "classes": [
                    {"id": 1, "name": "skull"},
                    {"id": 2, "name": "spine"},
                    {"id": 3, "name": "lesion"},
                ]
            }
        )
    )
    cfg = setup_cfg(
        CONFIGS / "mask_rcnn_R_18_FPN_cpu_bsi.yaml",
        ["BSI.DATASET_ROOT", str(root), "BSI.TAXONOMY", str(taxonomy)],
    )
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3


def test_setup_cfg_for_torchvision_rejects_keys_it_cannot_honour(tmp_path):
    # even where detectron2 is installed, a torchvision run is checked against the subset
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f'_BASE_: "{CONFIGS / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"}"\n'
        "MODEL:\n  ENGINE: torchvision\n  RESNETS:\n"
        "    DEFORM_ON_PER_STAGE: [False, True, False, False]\n"
    )
    with pytest.raises(KeyError, match=r"bad\.yaml.*DEFORM_ON_PER_STAGE"):
        setup_cfg(bad, ["BSI.DATASET_ROOT", str(tmp_path)])


def test_setup_cfg_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        setup_cfg(tmp_path / "nope.yaml")


def test_without_detectron2_auto_means_torchvision_and_the_subset(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "detectron2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    root = _tiny_layout(tmp_path / "bsi")
    for path in YAMLS:
        cfg = setup_cfg(path, ["BSI.DATASET_ROOT", str(root)])
        assert is_subset_cfg(cfg) and cfg.MODEL.ENGINE == "torchvision"
    cfg.defrost()
    cfg.MODEL.ENGINE = "detectron2"
    with pytest.raises(ImportError, match="detectron2 is not installed"):
        resolve_engine(cfg)
    with pytest.raises(ImportError, match="detectron2 is not installed"):
        setup_cfg(YAMLS[0], ["MODEL.ENGINE", "detectron2"])


def test_get_engine_picks_the_registered_engine():
    from bsi_d2.engine.base import Engine

    cfg = get_cfg(subset=True)
    cfg.MODEL.ENGINE = "torchvision"
    engine = get_engine(cfg)
    assert isinstance(engine, Engine) and engine.name == "torchvision"
    assert type(engine).__module__ == "bsi_d2.engine.torchvision"


def test_setup_cfg_for_inference_needs_no_training_data(tmp_path):
    cfg = setup_cfg(
        CONFIGS / "mask_rcnn_R_50_FPN_100ep_bsi.yaml",
        ["BSI.DATASET_ROOT", str(tmp_path / "empty"), "DATASETS.TRAIN", "('bsi_nowhere',)"],
    )
    assert cfg.SOLVER.EPOCHS == 100 and cfg.SOLVER.MAX_ITER == 1000  # left as the base says
