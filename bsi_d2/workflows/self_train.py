"""Self-training: K rounds of train -> pseudo-label -> retrain on labelled + pseudo-labelled
scans, on whichever engine the config resolves to.

Seed 003 learns lesions from few labelled and many unlabelled scans by adding an unsupervised
loss to the supervised one; this is the toolkit's counterpart at the level of the data, which
works with either engine and any Mask R-CNN config: round 0 trains on DATASETS.TRAIN alone;
after each round its model pseudo-labels the unlabelled scans
(:func:`bsi_d2.inference.pseudo.pseudo_label_scans`, per-class thresholds chosen on the
validation split); round k trains on DATASETS.TRAIN plus round k-1's pseudo-labels
(DATASETS.PSEUDO, mixed at DATASETS.PSEUDO_RATIO). Rounds 1..K each retrain from MODEL.WEIGHTS
(``warm_start``: from the previous round's model).

Layout: ``OUT/round{k}/`` is round k's OUTPUT_DIR, ``OUT/round{k}/pseudo/`` its pseudo-labels,
``OUT/self_train.json`` every round's evaluation (the numbers the engines log for DATASETS.TEST)
and pseudo-label counts. A rerun skips every finished step, continues a half-trained round from
its last checkpoint and a half-labelled folder scan by scan; a rerun with more rounds adds them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsi_d2.io.files import atomic_write_text

logger = logging.getLogger(__name__)

STATE_FILE = "self_train.json"
PSEUDO_DIR = "pseudo"
# settings a finished round depends on: a rerun with others would mix two experiments
_SETTINGS = ("config_file", "opts", "target_precision", "match_iou", "thresholds", "val_dataset",
             "warm_start")  # fmt: skip


@dataclass
class SelfTrainOptions:
    out: Path
    unlabelled: list[str]  # DICOM / PNG files or folders without labels
    rounds: int = 2  # K: retraining rounds after the supervised round 0
    config_file: str | None = None
    opts: list[str] = field(default_factory=list)  # KEY VALUE overrides for every round
    target_precision: float = 0.9  # per-class threshold rule (bsi_d2.inference.pseudo)
    match_iou: float = 0.5
    thresholds: str | None = None  # a fixed thresholds file instead of choosing them each round
    val_dataset: str | None = None  # where thresholds are chosen; None: DATASETS.TEST[0]
    warm_start: bool = False  # round k starts from round k-1's weights
    batch_size: int = 4
    device: str | None = None
    salt: str | None = None
    progress: bool = True

    def settings(self) -> dict[str, Any]:
        return {
            "config_file": str(self.config_file) if self.config_file else None,
            "opts": [str(o) for o in self.opts],
            "target_precision": float(self.target_precision),
            "match_iou": float(self.match_iou),
            "thresholds": str(self.thresholds) if self.thresholds else None,
            "val_dataset": self.val_dataset,
            "warm_start": bool(self.warm_start),
        }


def round_dir(out: Path, k: int) -> Path:
    return Path(out) / f"round{k}"


def _round_opts(options: SelfTrainOptions, k: int, previous: dict[str, Any] | None) -> list[str]:
    pseudo = previous["pseudo"]["coco_file"] if previous else ""
    opts = [*options.opts, "OUTPUT_DIR", str(round_dir(options.out, k)), "DATASETS.PSEUDO", pseudo]
    if options.warm_start and previous:
        opts += ["MODEL.WEIGHTS", str(previous["weights"])]
    return opts


def load_state(options: SelfTrainOptions) -> dict[str, Any]:
    """OUT/self_train.json, or a new one; a folder made with other settings is an error."""
    from bsi_d2.config import ConfigValueError

    path = Path(options.out) / STATE_FILE
    settings = options.settings()
    if not path.is_file():
        return {**settings, "rounds": []}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigValueError(f"{path}: unreadable self-training record: {err}") from err
    differ = [k for k in _SETTINGS if state.get(k) != settings[k]]
    if differ:
        raise ConfigValueError(
            f"{path}: this folder was self-trained with other settings ({', '.join(differ)}); "
            "use another output folder, or the same settings to resume it"
        )
    return state


def save_state(options: SelfTrainOptions, state: dict[str, Any]) -> Path:
    path = Path(options.out) / STATE_FILE
    state["rounds_requested"] = int(options.rounds)
    state["note"] = "Research metrics of an aid for physicians; not a diagnostic performance claim."
    return atomic_write_text(path, json.dumps(state, indent=2, default=str) + "\n")


def _train_round(
    options: SelfTrainOptions, k: int, previous: dict[str, Any] | None, engine: Any
) -> dict[str, Any]:
    from bsi_d2.config import setup_cfg
    from bsi_d2.evaluation.results import flatten_evaluations

    cfg = setup_cfg(options.config_file, _round_opts(options, k, previous))
    logger.info("self-training round %d/%d: training in %s", k, options.rounds, cfg.OUTPUT_DIR)
    trained = engine.train(cfg, resume=True)  # a half-trained round goes on from its checkpoint
    return {
        "round": k,
        "output_dir": str(cfg.OUTPUT_DIR),
        "weights": trained.get("weights") or trained.get("final_checkpoint"),
        "trained_on": {
            "labelled": list(cfg.DATASETS.TRAIN),
            "pseudo": str(cfg.DATASETS.PSEUDO) or None,
            "pseudo_ratio": float(cfg.DATASETS.PSEUDO_RATIO) if cfg.DATASETS.PSEUDO else None,
        },
        "iterations": trained.get("iterations"),
        "evaluated_on": list(cfg.DATASETS.TEST),
        "evaluation": flatten_evaluations(trained.get("evaluation") or {}),
    }


def _validation_split(cfg: Any, name: str | None) -> tuple[str, str]:
    """(COCO file, image root) of the split thresholds are chosen on."""
    from bsi_d2.config import ConfigValueError
    from bsi_d2.data.datasets import get_metadata

    name = name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if not name:
        raise ConfigValueError(
            "self-training chooses pseudo-label thresholds on a validation split: set "
            "DATASETS.TEST (or --val-dataset), or give --thresholds"
        )
    meta = get_metadata(name)
    return meta["json_file"], meta["image_root"]


def _pseudo_label_round(
    options: SelfTrainOptions, entry: dict[str, Any], engine: Any
) -> dict[str, Any]:
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.base import prepare_training
    from bsi_d2.engine.predictor import Predictor
    from bsi_d2.inference.batch import BatchOptions
    from bsi_d2.inference.pseudo import choose_thresholds, pseudo_label_scans, read_thresholds
    from bsi_d2.postprocess.qc import QCThresholds

    k = int(entry["round"])
    cfg = prepare_training(setup_cfg(options.config_file, _round_opts(options, k, None)))
    predictor = Predictor(cfg, weights=entry["weights"], device=options.device, engine=engine,
                          batch_size=options.batch_size)  # fmt: skip
    taxonomy = predictor.taxonomy
    if options.thresholds:
        thresholds = read_thresholds(options.thresholds, taxonomy)
    else:
        json_file, image_root = _validation_split(cfg, options.val_dataset)
        thresholds = choose_thresholds(predictor, json_file, taxonomy, options.target_precision,
                                       options.match_iou, image_root)  # fmt: skip
    batch = BatchOptions(
        batch_size=options.batch_size,
        salt=options.salt,
        progress=options.progress,
        qc=QCThresholds.from_config(cfg.BSI.QC),
        outputs=frozenset({"bsi", "predictions", "labelme"}),
        model={"config": options.config_file, "weights": entry["weights"], "engine": engine.name},
    )
    folder = round_dir(options.out, k) / PSEUDO_DIR
    logger.info("self-training round %d: pseudo-labelling into %s", k, folder)
    summary = pseudo_label_scans(options.unlabelled, folder, predictor, taxonomy, thresholds,
                                 batch)  # fmt: skip
    result = summary.pop("batch")
    return {
        "dir": str(folder),
        **summary,
        "threshold_values": thresholds["thresholds"],
        "scans_done": len(result.done) + len(result.skipped),
        "scans_failed": len(result.failed),
    }


def run_self_train(options: SelfTrainOptions) -> dict[str, Any]:
    """Rounds 0..K (module docstring); returns the record written to OUT/self_train.json."""
    from bsi_d2.config import ConfigValueError, setup_cfg
    from bsi_d2.engine import get_engine, prepare_training

    if options.rounds < 0:
        raise ConfigValueError(f"--rounds must be >= 0, got {options.rounds}")
    if not options.unlabelled and options.rounds > 0:
        raise ConfigValueError("self-training needs unlabelled scans to pseudo-label")
    options.out = Path(options.out)
    options.out.mkdir(parents=True, exist_ok=True)
    base = prepare_training(setup_cfg(options.config_file, list(options.opts)))  # registers data
    engine = get_engine(base)
    state = load_state(options)
    state["engine"] = engine.name
    rounds: list[dict[str, Any]] = state["rounds"]
    for k in range(options.rounds + 1):
        previous = rounds[k - 1] if k else None
        if k >= len(rounds):
            rounds.append(_train_round(options, k, previous, engine))
            save_state(options, state)
        else:
            logger.info("self-training round %d: trained earlier, skipped", k)
        if k < options.rounds and not rounds[k].get("pseudo"):
            rounds[k]["pseudo"] = _pseudo_label_round(options, rounds[k], engine)
            save_state(options, state)
    save_state(options, state)
    return state


def format_rounds(state: dict[str, Any], metrics: Sequence[str] = ("segm/AP",)) -> str:
    """One line per round: what it trained on and its evaluation's headline numbers."""
    lines = []
    for entry in state.get("rounds", []):
        pseudo = entry.get("pseudo") or {}
        numbers = ", ".join(
            f"{m} {entry['evaluation'][m]:.2f}" for m in metrics if m in entry.get("evaluation", {})
        )
        made = f"; pseudo-labelled {pseudo['images']} scans" if pseudo else ""
        lines.append(f"round {entry['round']}: {numbers or 'not evaluated'}{made}")
    return "\n".join(lines)
