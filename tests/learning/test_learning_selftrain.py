"""``bsi-d2 self-train`` on four phantoms at a tiny input size: round 0 trains on the labelled
split, its model pseudo-labels the unlabelled scans, round 1 retrains on both; every round's
evaluation is recorded, and a rerun redoes nothing that is finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.paths import CPU_CONFIG

from bsi_d2 import cli
from bsi_d2.config import ConfigValueError
from bsi_d2.data.convert import convert_labelme_folder
from bsi_d2.engine.torchvision import TorchvisionEngine
from bsi_d2.workflows.self_train import STATE_FILE, SelfTrainOptions, run_self_train

# the CPU leaf shrunk to a 128-pixel input: each round trains in seconds
TINY = {
    "MODEL.ENGINE": "torchvision",
    "MODEL.DEVICE": "cpu",
    "DATASETS.TRAIN": "('bsi_train',)",
    "DATASETS.TEST": "('bsi_val',)",
    "MODEL.FPN.OUT_CHANNELS": 32,
    "MODEL.ANCHOR_GENERATOR.SIZES": "[[8], [16], [32], [64], [128]]",
    "MODEL.ROI_BOX_HEAD.FC_DIM": 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 32,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 1,
    "INPUT.MIN_SIZE_TRAIN": "(96,)",
    "INPUT.MAX_SIZE_TRAIN": 128,
    "INPUT.MIN_SIZE_TEST": 96,
    "INPUT.MAX_SIZE_TEST": 128,
    "INPUT.BSI_AUG.ENABLED": False,
    "DATALOADER.NUM_WORKERS": 0,
    "SOLVER.IMS_PER_BATCH": 2,
    "SOLVER.MAX_ITER": 3,
    "SOLVER.WARMUP_ITERS": 0,
    "TEST.DETECTIONS_PER_IMAGE": 10,
    "SEED": 5,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    from bsi_d2.phantom import write_phantoms

    root = tmp_path_factory.mktemp("self_train")
    write_phantoms(root / "ph", 4, seed=11, workers=1)
    convert_labelme_folder(
        root / "ph" / "labelme", root / "coco", split=(0.5, 0.25, 0.25), workers=1
    )
    opts = [str(v) for kv in {**TINY, "BSI.DATASET_ROOT": root / "coco"}.items() for v in kv]
    return {"root": root, "opts": opts, "unlabelled": str(root / "ph" / "dicom")}


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("st_out")
    argv = ["self-train", "--config-file", str(CPU_CONFIG), "--out", str(out), "--rounds", "1",
            "--unlabelled", data["unlabelled"], "--no-progress", *data["opts"]]  # fmt: skip
    assert cli.main(argv) == 0
    return out


def _options(data, out: Path, **changes) -> SelfTrainOptions:
    fields = {"out": out, "unlabelled": [data["unlabelled"]], "rounds": 1,
              "config_file": str(CPU_CONFIG), "opts": data["opts"], "progress": False}  # fmt: skip
    return SelfTrainOptions(**{**fields, **changes})


def test_each_round_is_trained_evaluated_and_pseudo_labels_feed_the_next(first_run):
    state = json.loads((first_run / STATE_FILE).read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    first, second = state["rounds"]
    for entry in (first, second):
        assert Path(entry["weights"]).is_file() and entry["iterations"] == 3
        assert entry["evaluated_on"] == ["bsi_val"]
        # the flattened numbers both engines log; sensitivity is defined for any model
        assert "pixel/skeleton/sensitivity" in entry["evaluation"]
    assert first["trained_on"]["pseudo"] is None
    pseudo = first["pseudo"]
    assert Path(pseudo["coco_file"]) == first_run / "round0" / "pseudo" / "pseudo_labels.json"
    assert pseudo["scans_done"] == 4 and pseudo["scans_failed"] == 0
    assert (first_run / "round0" / "pseudo" / "thresholds.json").is_file()
    assert second["trained_on"] == {
        "labelled": ["bsi_train"],
        "pseudo": pseudo["coco_file"],
        "pseudo_ratio": 0.5,
    }
    assert "pseudo" not in second  # the last round's model labels nothing more


def test_a_rerun_redoes_nothing_and_more_rounds_add_only_the_new_ones(data, first_run, monkeypatch):
    calls = []
    real_train = TorchvisionEngine.train

    def counted(self, cfg, resume=False):
        calls.append(Path(str(cfg.OUTPUT_DIR)).name)
        return real_train(self, cfg, resume=resume)

    monkeypatch.setattr(TorchvisionEngine, "train", counted)
    before = (first_run / "round0" / "model_final.pth").stat().st_mtime_ns
    state = run_self_train(_options(data, first_run))
    assert calls == [] and len(state["rounds"]) == 2
    assert (first_run / "round0" / "model_final.pth").stat().st_mtime_ns == before

    state = run_self_train(_options(data, first_run, rounds=2))
    assert calls == ["round2"]
    assert [r["round"] for r in state["rounds"]] == [0, 1, 2]
    assert state["rounds"][1]["pseudo"]["scans_done"] == 4
    assert state["rounds"][2]["trained_on"]["pseudo"] == state["rounds"][1]["pseudo"]["coco_file"]


def test_a_folder_self_trained_with_other_settings_is_refused(data, first_run):
    with pytest.raises(ConfigValueError, match="target_precision") as err:
        run_self_train(_options(data, first_run, target_precision=0.8))
    assert STATE_FILE in str(err.value)
