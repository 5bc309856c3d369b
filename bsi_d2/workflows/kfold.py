"""k-fold cross-validation (seed 000: 10 folds, train:val:test = 8:1:1) over the converter's
``bsi_fold{K}_{train,val,test}`` data sets, on whichever engine the config resolves to.

Each fold trains on its train split (TEST.EVAL_PERIOD > 0: evaluated on its val split as it
goes), is scored on its
test split with :func:`bsi_d2.evaluation.evaluate_dataset`, and the folds are summarised as
mean +- SD per class in ``OUTPUT_DIR/kfold_summary.json`` and ``kfold_summary.md``.
Fold k trains with seed SEED + k, so a run is reproducible from SEED (SEED < 0 draws one base
seed, which the summary records).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS = ("ap", "precision", "sensitivity", "f1")


def fold_dataset(fold: int, split: str) -> str:
    return f"bsi_fold{fold}_{split}"


def _fold_opts(
    opts: Sequence[str], fold: int, output_dir: Path, seed: int, eval_period: int
) -> list[str]:
    # the val split serves periodic evaluation only; the test split is scored after training
    val = f"('{fold_dataset(fold, 'val')}',)" if eval_period > 0 else "()"
    return [
        *opts,
        "DATASETS.TRAIN", f"('{fold_dataset(fold, 'train')}',)",
        "DATASETS.TEST", val,
        "OUTPUT_DIR", str(output_dir / f"fold{fold}"),
        "SEED", str(seed + fold),
    ]  # fmt: skip


def mean_sd(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample SD over the folds where the value is defined (SD needs two)."""
    defined = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.mean(defined) if defined else None,
        "sd": statistics.stdev(defined) if len(defined) > 1 else None,
        "n": len(defined),
    }


def fold_numbers(evaluation: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """class -> {ap, precision, sensitivity, f1} (fractions) from one test-split evaluation."""
    from bsi_d2.evaluation.results import EvaluationResult, PixelScores

    typed = EvaluationResult.from_dict(evaluation)
    out = {}
    for name, ap in typed.segm.per_class.items():
        pixel = typed.per_class.get(name, PixelScores())
        out[name] = {
            "ap": ap,
            "precision": pixel.precision,
            "sensitivity": pixel.sensitivity,
            "f1": pixel.f1,
        }
    return out


def summarise(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean +- SD per class and of the headline numbers over the folds' test evaluations."""
    classes = list(per_fold[0]["per_class"]) if per_fold else []
    per_class = {
        name: {m: mean_sd([f["per_class"][name][m] for f in per_fold]) for m in METRICS}
        for name in classes
    }
    overall = {
        key: mean_sd([f["overall"][key] for f in per_fold])
        for key in (per_fold[0]["overall"] if per_fold else {})
    }
    return {"per_class": per_class, "overall": overall}


def _overall(evaluation: dict[str, Any]) -> dict[str, float | None]:
    from bsi_d2.evaluation.results import EvaluationResult

    typed = EvaluationResult.from_dict(evaluation)
    pixel = evaluation["pixel"]
    return {
        "segm_AP": typed.segm.ap,
        "segm_AP50": typed.segm.ap50,
        "pixel_mean_precision": pixel["mean"]["precision"],
        "pixel_mean_sensitivity": pixel["mean"]["sensitivity"],
        "pixel_mean_f1": pixel["mean"]["f1"],
        "pixel_mean_f1_without_decoys": pixel["mean_without_decoys"]["f1"],
        "skeleton_pixel_f1": typed.skeleton.f1,
        "lesion_dice_pooled": typed.lesion.dice_pooled,
        "lesion_sensitivity_at_1fp": typed.lesion_detection.sensitivity_at_fp.get("1"),
        "lesion_froc_score": typed.lesion_detection.froc_score,
        "scan_sensitivity": typed.scan.get("sensitivity"),
        "scan_specificity": typed.scan.get("specificity"),
        "burden_group_kappa": typed.burden.get("group_kappa"),
        "burden_group_agreement": typed.burden.get("group_agreement"),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown: one row per class, mean +- SD in percent over the folds (n = folds scored)."""

    def cell(stat: dict[str, Any]) -> str:
        if stat["mean"] is None:
            return "-"
        sd = "" if stat["sd"] is None else f" ± {100 * stat['sd']:.2f}"
        return f"{100 * stat['mean']:.2f}{sd}"

    header = "| Class | Mask AP | Precision | Sensitivity | F1 | folds |"
    lines = [
        f"k-fold cross-validation, {summary['folds']} folds, test splits; mean ± SD (percent).",
        "",
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, stats in summary["per_class"].items():
        n = max(s["n"] for s in stats.values())
        lines.append(f"| {name} | " + " | ".join(cell(stats[m]) for m in METRICS) + f" | {n} |")
    lines.append("")
    for key, stat in summary["overall"].items():
        lines.append(f"- {key}: {cell(stat)}")
    return "\n".join(lines) + "\n"


def run_kfold(
    config_file: str | os.PathLike | None,
    opts: Sequence[str] = (),
    folds: int = 10,
    resume: bool = False,
) -> dict[str, Any]:
    """Train and test every fold; returns the summary written to OUTPUT_DIR/kfold_summary.json.

    ``opts`` are ``KEY VALUE`` overrides applied to every fold (fold k adds its data sets,
    OUTPUT_DIR/fold{k} and SEED + k). ``resume`` continues each fold from its last checkpoint.
    """
    from bsi_d2.config import ConfigValueError, setup_cfg
    from bsi_d2.data.datasets import DatasetError, registered_names
    from bsi_d2.engine import get_engine, prepare_training
    from bsi_d2.engine.predictor import Predictor, evaluate_on_datasets

    if folds < 1:
        raise ConfigValueError(f"--folds must be >= 1, got {folds}")
    base = prepare_training(setup_cfg(config_file, list(opts)))  # registers the data sets
    engine = get_engine(base)
    missing = [
        fold_dataset(k, s)
        for k in range(folds)
        for s in ("train", "val", "test")
        if fold_dataset(k, s) not in registered_names()
    ]
    if missing:
        root = base.BSI.DATASET_ROOT or os.environ.get("BSI_D2_DATASETS", "datasets/bsi")
        raise DatasetError(
            f"{root}: k-fold data sets missing: {', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''}; "
            f"run `bsi-d2 convert SRC --out OUT --folds {folds}`"
        )
    seed = int(base.SEED)
    if seed < 0:
        seed = int.from_bytes(os.urandom(3), "little")
        logger.info("SEED < 0: k-fold base seed %d (recorded in the summary)", seed)
    output_dir = Path(str(base.OUTPUT_DIR))
    per_fold = []
    for k in range(folds):
        fold_opts = _fold_opts(opts, k, output_dir, seed, int(base.TEST.EVAL_PERIOD))
        cfg = setup_cfg(config_file, fold_opts)
        logger.info("fold %d/%d: training on %s", k + 1, folds, fold_dataset(k, "train"))
        trained = engine.train(cfg, resume=resume)
        weights = trained.get("weights") or trained.get("final_checkpoint")
        predictor = Predictor(cfg, weights=weights, engine=engine)  # data registered above
        test = fold_dataset(k, "test")
        evaluation = evaluate_on_datasets(predictor, [test], Path(cfg.OUTPUT_DIR) / "inference")
        per_fold.append(
            {
                "fold": k,
                "output_dir": str(cfg.OUTPUT_DIR),
                "weights": str(weights),
                "test_dataset": test,
                "n_test_images": evaluation[test]["n_images"],
                "failed": evaluation[test].get("failed", []),
                "per_class": fold_numbers(evaluation[test]),
                "overall": _overall(evaluation[test]),
            }
        )
    summary = {
        "folds": folds,
        "engine": engine.name,
        "config_file": str(config_file) if config_file else None,
        "opts": list(opts),
        "seed": seed,
        **summarise(per_fold),
        "per_fold": per_fold,
        "note": "Research metrics of an aid for physicians; not a diagnostic performance claim.",
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "kfold_summary.json").write_text(json.dumps(summary, indent=2), "utf-8")
    (output_dir / "kfold_summary.md").write_text(format_summary(summary), "utf-8")
    return summary
