"""Which unlabelled scan to annotate next: scans ranked by the model's uncertainty (active
learning in the manner of MONAI Label, without a server), or in a seeded random order to compare.

:func:`rank_unlabelled` runs batch inference once per augmentation (``OUT/runs/<name>/``,
``predict``'s folders, resumable; the identity's with Labelme files), scores every scan that all
runs finished (:mod:`bsi_d2.inference.uncertainty`: ``tta`` or ``entropy``), and writes
``OUT/ranking.csv`` and ``OUT/ranking.json`` (most uncertain first, ties broken by key),
``OUT/errors.jsonl`` and, for the top N, the model's Labelme files in ``OUT/labelme/`` to be
corrected. Scans are named by their content key only, never by a file name or path. Quality
control is off in these runs: it withholds a decision from a reader, and here nobody reads one.
A rerun with the same inputs, model and settings writes the same files; one with another model or
settings redoes the runs, as their answers would be stale.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bsi_d2.inference import outputs as out
from bsi_d2.inference import uncertainty as tta
from bsi_d2.inference.batch import BatchOptions, BatchResult, run_batch
from bsi_d2.io.base import META_SUFFIX
from bsi_d2.io.files import atomic_write_text
from bsi_d2.postprocess.qc import QCThresholds
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"  # OUT/runs/<augmentation>/: one batch-inference folder per augmentation
LABELME_DIR = "labelme"  # OUT/labelme/<key>.json + .png + .meta.json for the top N
RANKING_CSV = "ranking.csv"
RANKING_JSON = "ranking.json"
SETTINGS_FILE = "settings.json"  # OUT/runs/settings.json: what the runs' answers came from
RANDOM = "random"
DEFAULT_TOP = 10
ROUND = 6  # decimals written and compared: equal as printed is a tie, broken by key
# which outputs each run writes: the identity's Labelme files are the top N's pre-filled ones
IDENTITY_OUTPUTS = frozenset({"bsi", "predictions", "labelme"})
AUGMENTED_OUTPUTS = frozenset({"bsi", "predictions"})


class RankingError(ValueError):
    """Inputs and output folder that cannot be ranked as given; the message says why."""


@dataclass
class RankedScan:
    key: str
    uncertainty: float | None  # None in a random order
    parts: dict[str, Any] = field(default_factory=dict)
    labelme: str | None = None  # OUT-relative path of its pre-filled Labelme file (top N)


@dataclass
class Ranking:
    method: str  # tta, entropy or random
    scans: list[RankedScan]  # first to annotate first
    errors: list[dict[str, Any]]  # inputs rejected and scans failed, as predict records them
    augmentations: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        labelled = sum(s.labelme is not None for s in self.scans)
        return (
            f"{len(self.scans)} scans ranked by {self.method}, {labelled} Labelme files "
            f"written, {len(self.errors)} inputs rejected or failed"
        )


def random_order(keys: Sequence[str], seed: int) -> list[str]:
    """``keys`` in a random order drawn from ``seed``: the same order for the same set of keys,
    whatever order they come in (the control arm of uncertainty ranking vs random)."""
    ordered = sorted(set(keys))
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def order_by_uncertainty(scans: Sequence[RankedScan]) -> list[RankedScan]:
    """Most uncertain first; equal uncertainties (to :data:`ROUND` decimals) by key."""
    return sorted(scans, key=lambda s: (-round(float(s.uncertainty or 0.0), ROUND), s.key))


# -- reading a run's answer -----------------------------------------------------------------


def _run_dir(out_dir: Path, name: str) -> Path:
    return out_dir / RUNS_DIR / name


def _record(run_dir: Path, key: str) -> dict[str, Any]:
    path = run_dir / out.SCANS_DIR / key / out.RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def _predictions(run_dir: Path, key: str) -> tuple[Instances, np.ndarray]:
    """Every instance a run's model returned for ``key``, and which passed the thresholds."""
    path = run_dir / out.SCANS_DIR / key / out.PREDICTIONS_FILE
    kept = [bool(i["kept"]) for i in json.loads(path.read_text(encoding="utf-8"))["instances"]]
    return out.read_predictions(path), np.asarray(kept, bool)


def _lesion_mask(run_dir: Path, key: str, taxonomy: Taxonomy) -> np.ndarray:
    instances, kept = _predictions(run_dir, key)
    return tta.lesion_mask(instances.masks, instances.category_ids, kept, taxonomy)


# scorer: (OUT, scan key, augmentation names, taxonomy, BSI weight) -> its uncertainty
Scorer = Callable[[Path, str, Sequence[str], Taxonomy, float], tta.ScanUncertainty]


def score_tta(
    out_dir: Path, key: str, names: Sequence[str], taxonomy: Taxonomy, bsi_weight: float
) -> tta.ScanUncertainty:
    runs = [_run_dir(out_dir, n) for n in names]
    return tta.tta_uncertainty(
        names,
        [_lesion_mask(r, key, taxonomy) for r in runs],
        [_record(r, key).get("bsi") for r in runs],
        bsi_weight,
    )


def score_entropy(
    out_dir: Path, key: str, names: Sequence[str], taxonomy: Taxonomy, bsi_weight: float
) -> tta.ScanUncertainty:
    instances, kept = _predictions(_run_dir(out_dir, tta.IDENTITY), key)
    return tta.entropy_uncertainty(instances.scores[kept])


SCORERS: dict[str, Scorer] = {"tta": score_tta, "entropy": score_entropy}
FORMULAS = {"tta": tta.TTA_FORMULA, "entropy": tta.ENTROPY_FORMULA, RANDOM: "seeded shuffle"}


# -- the ranking ----------------------------------------------------------------------------


def rank_unlabelled(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    predictor: Callable[[list[np.ndarray]], list[Instances]],
    taxonomy: Taxonomy,
    options: BatchOptions | None = None,
    *,
    method: str = "tta",
    augmentations: Sequence[str] = tta.DEFAULT_AUGMENTATIONS,
    top: int = DEFAULT_TOP,
    bsi_weight: float = tta.BSI_WEIGHT,
    random_seed: int | None = None,
) -> Ranking:
    """Rank the scans of ``inputs`` for annotation into ``out_dir`` (see the module docstring).
    ``method``: ``tta`` (the identity and ``augmentations``) or ``entropy`` (the identity
    alone); ``random_seed`` given: a seeded random order instead (the identity's run alone, for
    its Labelme files). ``top``: how many of the first get Labelme files."""
    if method not in SCORERS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(SCORERS)}")
    out_dir = Path(out_dir)
    _check_not_inside_inputs(out_dir, inputs)
    if random_seed is not None:
        method, names = RANDOM, (tta.IDENTITY,)
    elif method == "tta":
        names = (tta.IDENTITY, *tta.parse_augmentations(",".join(augmentations)))
    else:
        names = (tta.IDENTITY,)
    base = dataclasses.replace(
        options or BatchOptions(), qc=QCThresholds(enabled=False), shard=(0, 1)
    )
    settings = _run_settings(base)
    _forget_stale_runs(out_dir, settings)

    results: dict[str, BatchResult] = {}
    for name in names:
        run_options = dataclasses.replace(
            base, outputs=IDENTITY_OUTPUTS if name == tta.IDENTITY else AUGMENTED_OUTPUTS
        )
        augmented = tta.AugmentedPredictor(predictor, tta.AUGMENTATIONS[name], taxonomy)
        logger.info("%s: predicting", name)
        results[name] = run_batch(inputs, _run_dir(out_dir, name), augmented, taxonomy, run_options)
        logger.info("%s: %s", name, results[name].summary())

    errors = _merged_errors(results)
    failed = {e["key"] for e in errors}
    keys = [k for k in _finished(results[tta.IDENTITY]) if k not in failed]
    keys = [k for k in keys if all(k in _finished(r) for r in results.values())]
    if method == RANDOM:
        scans = [RankedScan(k, None) for k in random_order(keys, int(random_seed))]
    else:
        scorer = SCORERS[method]
        scans = []
        for key in keys:
            try:
                scored = scorer(out_dir, key, names, taxonomy, bsi_weight)
            except (OSError, ValueError, KeyError) as err:  # a damaged run file: this scan only
                errors.append(_score_error(key, err))
                continue
            scans.append(RankedScan(key, scored.uncertainty, scored.parts))
        scans = order_by_uncertainty(scans)
    errors.sort(key=lambda e: str(e.get("key")))

    for scan in scans[: max(0, top)]:
        scan.labelme = _place_labelme(out_dir, scan.key)
    described = {**settings, "method": method, "formula": FORMULAS[method], "seed": random_seed,
                 "top": max(0, top), "bsi_weight": float(bsi_weight)}  # fmt: skip
    ranking = Ranking(method, scans, errors, names[1:] if method == "tta" else (), described)
    write_ranking(out_dir, ranking)
    logger.info("%s; ranking in %s", ranking.summary(), out_dir / RANKING_CSV)
    return ranking


def _check_not_inside_inputs(out_dir: Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output folder inside an input folder: a rerun would read its Labelme files."""
    target = out_dir.resolve()
    for item in inputs:
        folder = Path(item).resolve()
        if folder.is_dir() and (target == folder or folder in target.parents):
            raise RankingError("the output folder lies inside an input folder; choose one outside")


def _run_settings(options: BatchOptions) -> dict[str, Any]:
    """What the runs' answers depend on besides the inputs: the model and the analysis."""
    class_thresh = {str(k): float(v) for k, v in (options.class_thresh or {}).items()}
    return {
        "model": dict(options.model),
        "score_thresh": float(options.score_thresh),
        "class_thresh": dict(sorted(class_thresh.items())),
        "combine": options.combine,
        "match_views": bool(options.match_views),
        "match_radius": float(options.match_radius),
        "cut_below_knee": bool(options.cut_below_knee),
        "salt_check": _salt_check(options.salt),
        "intensity_factor": tta.INTENSITY_FACTOR,
    }


def _salt_check(salt: str | None) -> str:
    """A pseudonym made with the salt in force, to see it changed without writing it down."""
    from bsi_d2.io.pseudonym import pseudonym

    return pseudonym("salt-check", salt=salt, prefix="s")


def _forget_stale_runs(out_dir: Path, settings: dict[str, Any]) -> None:
    """Remove ``OUT/runs`` when it was made by another model or with other settings (a rerun
    would skip its finished scans and rank stale answers); then note the current ones."""
    runs = out_dir / RUNS_DIR
    path = runs / SETTINGS_FILE
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    if before is not None and before != settings:
        logger.info("model or settings changed since %s was made: predicting again", runs)
        shutil.rmtree(runs)
    elif before is None and runs.exists():
        shutil.rmtree(runs)  # no note of how it was made: as good as stale
    out.atomic_write_json(path, settings)


def _finished(result: BatchResult) -> list[str]:
    """The keys of the scans a run finished, now or before, in the order it met them."""
    return list(dict.fromkeys([*result.done, *result.skipped]))


def _merged_errors(results: dict[str, BatchResult]) -> list[dict[str, Any]]:
    """Each input's error once (the first run's entry), with the runs it failed in."""
    merged: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        for entry in result.errors:
            key = str(entry.get("key"))
            if key not in merged:
                merged[key] = {**entry, "augmentations": []}
            merged[key]["augmentations"].append(name)
    return list(merged.values())


def _score_error(key: str, err: BaseException) -> dict[str, Any]:
    reason = f"{type(err).__name__}: {err}"
    logger.warning("%s: uncertainty failed: %s", key, reason)
    return {"key": key, "path": key, "stage": "uncertainty", "reason": reason, "augmentations": []}


def _place_labelme(out_dir: Path, key: str) -> str | None:
    """Copy the identity run's Labelme files of ``key`` into ``OUT/labelme/``; a Labelme file
    already there is kept (an annotator may be correcting it). Its OUT-relative path."""
    source = _run_dir(out_dir, tta.IDENTITY) / out.SCANS_DIR / key
    target = out_dir / LABELME_DIR
    target.mkdir(parents=True, exist_ok=True)
    document = target / f"{key}.json"
    if not (source / f"{key}.json").is_file():
        logger.warning("%s: no Labelme file was written for it", key)
        return None
    if document.exists():
        logger.info("%s: kept as it is (it may hold corrections)", document.name)
    else:
        for suffix in (".png", META_SUFFIX, ".json"):  # the JSON last: it marks the set whole
            shutil.copyfile(source / f"{key}{suffix}", target / f"{key}{suffix}")
    return f"{LABELME_DIR}/{key}.json"


# -- files ----------------------------------------------------------------------------------


def ranking_rows(ranking: Ranking) -> list[dict[str, Any]]:
    """One row per scan: rank (1 first), key, uncertainty, its parts, the Labelme file."""
    rows = []
    for rank, scan in enumerate(ranking.scans, start=1):
        parts = {k: _rounded(v) for k, v in scan.parts.items()}
        rows.append({"rank": rank, "key": scan.key, "uncertainty": _rounded(scan.uncertainty),
                     **parts, "labelme": scan.labelme})  # fmt: skip
    return rows


def _rounded(value: Any) -> Any:
    return round(float(value), ROUND) if isinstance(value, (float, np.floating)) else value


def ranking_csv(ranking: Ranking) -> str:
    rows = ranking_rows(ranking)
    columns = ["rank", "key", "uncertainty"]
    for row in rows:
        columns += [c for c in row if c not in columns and c != "labelme"]
    columns.append("labelme")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buf.getvalue()


def write_ranking(out_dir: str | Path, ranking: Ranking) -> None:
    """``OUT/ranking.csv``, ``OUT/ranking.json`` and ``OUT/errors.jsonl``, atomically."""
    out_dir = Path(out_dir)
    document = {
        "method": ranking.method,
        "augmentations": list(ranking.augmentations),
        "settings": ranking.settings,
        "scans": ranking_rows(ranking),
        "errors": ranking.errors,
    }
    atomic_write_text(out_dir / RANKING_CSV, ranking_csv(ranking))
    out.atomic_write_json(out_dir / RANKING_JSON, document)
    atomic_write_text(out_dir / out.ERRORS_FILE, out.errors_jsonl(ranking.errors))
