"""The main job end to end on synthetic data: phantoms -> Labelme -> COCO -> training -> batch
inference on held-out DICOM -> reports -> evaluation against the phantoms' exact truth.

Every stage leaves a marker in ``OUT/stages/``; a rerun skips finished stages, training resumes
from its last checkpoint and batch inference skips finished scans, so an interrupted demo picks
up where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bsi_d2.inference import outputs as out
from bsi_d2.io.files import atomic_write_text
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import BENIGN_NAME

logger = logging.getLogger(__name__)

# half resolution for the regions, the dense lesion head at native resolution: ~9-12 min of
# training on 2 cores (README: the demo's numbers over 3 seeds)
CPU_CONFIG = "mask_rcnn_R_18_FPN_cpu_lesion_bsi.yaml"
GPU_CONFIG = "mask_rcnn_R_18_FPN_fullres_bsi.yaml"  # native resolution, for lesions
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # package data: works when installed


@dataclass
class DemoOptions:
    out: Path = Path("output/demo")
    scans: int = 100  # synthetic patients in all
    seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train / val / test (held out)
    config: str | None = None  # a file in configs/ or a path; None: by device
    iterations: int | None = None  # SOLVER.MAX_ITER override; None keeps the config's
    batch_size: int = 4  # inference batch size
    device: str | None = None  # None: CUDA where present, else CPU
    workers: int | None = None  # processes for phantom making and conversion
    difficulty: str = "standard"  # phantom preset: standard or hard (bsi_d2.phantom.presets)
    label_benign: bool = False  # look-alikes labelled 'benign', trained with that taxonomy
    opts: list[str] = field(default_factory=list)  # extra KEY VALUE config overrides


def resolve_config(name: str) -> Path:
    """A config given as a path, or by file name from the configs shipped with the package
    (``bsi_d2/configs/``, which the repository's ``configs/`` links to)."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / name
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"config {name!r} not found (looked in {CONFIG_DIR})")


class _Stages:
    """Markers of finished stages, each holding that stage's result as JSON."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}

    def run(self, name: str, step: int, total: int, work: Callable[[], dict]) -> dict:
        marker = self.dir / f"{name}.json"
        if marker.is_file():
            print(f"[{step}/{total}] {name}: done earlier, skipped ({marker})", flush=True)
            return json.loads(marker.read_text(encoding="utf-8"))
        print(f"[{step}/{total}] {name} ...", flush=True)
        start = time.perf_counter()
        result = work()
        self.timings[name] = round(time.perf_counter() - start, 1)
        result = {**result, "seconds": self.timings[name]}
        atomic_write_text(marker, json.dumps(result, indent=2, default=str))
        print(f"[{step}/{total}] {name}: {self.timings[name]:.0f} s", flush=True)
        return result


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run every stage; returns the summary also written to ``OUT/demo_summary.json``."""
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out)
    phantoms, coco, train_dir, predict_dir, eval_dir = (
        out / "phantoms",
        out / "coco",
        out / "train",
        out / "predict",
        out / "evaluation",
    )
    total = 5

    def make_phantoms() -> dict:
        from bsi_d2.phantom import write_phantoms

        written = write_phantoms(
            phantoms,
            options.scans,
            seed=options.seed,
            workers=options.workers,
            difficulty=options.difficulty,
            label_benign=options.label_benign,
        )
        return {
            "patients": len(written),
            "folder": str(phantoms),
            "difficulty": options.difficulty,
        }

    def convert() -> dict:
        from bsi_d2.data.convert import convert_labelme_folder

        report = convert_labelme_folder(
            phantoms / "labelme",
            coco,
            taxonomy=BENIGN_NAME if options.label_benign else None,
            split=options.split,
            seed=options.seed,
            stratify="lesion",
            workers=options.workers,
        )
        print(report.summary(), flush=True)
        if not report.ok:
            raise RuntimeError(f"conversion reported problems; see {coco}/conversion_report.json")
        return report.to_dict()

    cfg = None

    def config() -> Any:
        nonlocal cfg
        if cfg is None:
            cfg = _demo_cfg(options, coco, train_dir)
        return cfg

    def train() -> dict:
        from bsi_d2.engine import get_engine

        c = config()
        engine = get_engine(c)
        print(
            f"    engine {engine.name}, device {c.MODEL.DEVICE}, "
            f"{c.SOLVER.MAX_ITER} iterations of batch {c.SOLVER.IMS_PER_BATCH}",
            flush=True,
        )
        result = engine.train(c, resume=True)
        return {
            "engine": engine.name,
            "result": result,
            "weights": str(train_dir / "model_final.pth"),
        }

    train_result = None

    def predict() -> dict:
        from bsi_d2.engine.predictor import build_predictor
        from bsi_d2.inference.batch import BatchOptions, run_batch
        from bsi_d2.postprocess.qc import QCThresholds
        from bsi_d2.postprocess.rasterize import parse_class_thresholds

        c = config()
        weights = str(train_dir / "model_final.pth")
        predictor = build_predictor(c, weights=weights, device=str(c.MODEL.DEVICE))
        inputs = [str(phantoms / "dicom" / f"{pid}.dcm") for pid in _test_patients(coco)]
        model = {
            "config": demo_config(options).name,
            "weights": weights,
            "engine": train_result["engine"] if train_result else "",
        }
        result = run_batch(
            inputs,
            predict_dir,
            predictor,
            predictor.taxonomy,
            # synthetic patients: file names may be kept, they tie predictions to the truth
            BatchOptions(
                batch_size=options.batch_size,
                model=model,
                score_thresh=float(c.BSI.SCORE_THRESH),
                class_thresh=parse_class_thresholds(list(c.BSI.CLASS_SCORE_THRESH)),
                combine=str(c.BSI.COMBINE_VIEWS),
                match_views=bool(c.BSI.MATCH_VIEWS),
                match_radius=float(c.BSI.MATCH_RADIUS),
                qc=QCThresholds.from_config(c.BSI.QC),
                keep_identity=True,
            ),
        )
        return {
            "scans": len(inputs),
            "done": len(result.done) + len(result.skipped),
            "failed": result.failed,
            "index": str(predict_dir / "index.html"),
        }

    def evaluate() -> dict:
        return _evaluate(config(), coco, phantoms, predict_dir, eval_dir)

    stages.run("phantoms", 1, total, make_phantoms)
    stages.run("convert", 2, total, convert)
    train_result = stages.run("train", 3, total, train)
    stages.run("predict", 4, total, predict)
    evaluation = stages.run("evaluate", 5, total, evaluate)

    summary = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "engine": train_result.get("engine"),
        "device": str(config().MODEL.DEVICE),
        "metrics": evaluation["headline"],
        "seconds": stages.timings,
        "report_index": str(predict_dir / "index.html"),
        "evaluation_page": str(eval_dir / "evaluation.html"),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _print_summary(summary)
    return summary


def rerun_demo(
    demo: Path, out: Path, train_dir: Path | None = None, opts: list[str] | None = None
) -> dict[str, Any]:
    """A finished demo's predict and evaluate stages again, under ``out``: on its phantoms and
    split (linked, not copied), with the model in ``train_dir`` (default: the demo's own) and
    ``opts`` added to its overrides. For ablations and learning experiments that compare models
    on exactly the demo's held-out scans; returns the summary."""
    demo, out = Path(demo), Path(out)
    summary = json.loads((demo / "demo_summary.json").read_text(encoding="utf-8"))
    options = summary["options"]
    (out / "stages").mkdir(parents=True, exist_ok=True)
    links = {"phantoms": demo / "phantoms", "coco": demo / "coco",
             "train": train_dir or demo / "train"}  # fmt: skip
    for name, target in links.items():
        link = out / name
        if not link.exists():
            link.symlink_to(Path(target).resolve(), target_is_directory=True)
    for stage in ("phantoms", "convert", "train"):
        marker = (demo / "stages" / f"{stage}.json").read_bytes()
        (out / "stages" / f"{stage}.json").write_bytes(marker)
    return run_demo(
        DemoOptions(
            out=out,
            scans=options["scans"],
            seed=options["seed"],
            split=tuple(options["split"]),
            config=options["config"],
            iterations=options["iterations"],
            batch_size=options["batch_size"],
            device=options["device"],
            difficulty=options.get("difficulty", "standard"),
            label_benign=bool(options.get("label_benign", False)),
            opts=list(options.get("opts") or []) + list(opts or []),
        )
    )


def _device(options: DemoOptions) -> str:
    import torch

    return options.device or ("cuda" if torch.cuda.is_available() else "cpu")


def demo_config(options: DemoOptions) -> Path:
    """The config the demo trains: the user's, else the GPU or CPU leaf by device."""
    default = GPU_CONFIG if _device(options).startswith("cuda") else CPU_CONFIG
    return resolve_config(options.config or default)


def _demo_cfg(options: DemoOptions, coco: Path, train_dir: Path) -> Any:
    from bsi_d2.config import setup_cfg

    device = _device(options)
    opts = [
        "BSI.DATASET_ROOT",
        str(coco),
        "DATASETS.TRAIN",
        "('bsi_train',)",
        "DATASETS.TEST",
        "('bsi_val',)",
        "OUTPUT_DIR",
        str(train_dir),
        "MODEL.DEVICE",
        device,
        "SEED",
        str(options.seed),
    ]
    if options.iterations is not None:
        opts += ["SOLVER.MAX_ITER", str(options.iterations)]
    if options.label_benign:
        opts += ["BSI.TAXONOMY", BENIGN_NAME]
    return setup_cfg(str(demo_config(options)), opts + list(options.opts))


def _test_patients(coco: Path) -> list[str]:
    """Phantom ids of the held-out test split, from the COCO file's Labelme sources."""
    data = json.loads((coco / "annotations" / "instances_test.json").read_text(encoding="utf-8"))
    return sorted(Path(img["labelme_file"]).stem for img in data["images"])


def _analysed_records(predict_dir: Path) -> list[tuple[Path, dict]]:
    """(scan folder, record) of every scan the model segmented: ok, qc_failed and not_assessed
    alike (their predictions exist); failed scans have none."""
    found = []
    for scan_dir in sorted((predict_dir / out.SCANS_DIR).iterdir()):
        record_path = scan_dir / out.RECORD_FILE
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if (
            record["status"] in out.FINISHED_STATUSES
            and (scan_dir / out.PREDICTIONS_FILE).is_file()
        ):
            found.append((scan_dir, record))
    return found


def _evaluate(cfg: Any, coco: Path, phantoms: Path, predict_dir: Path, eval_dir: Path) -> dict:
    """Pixel/COCO metrics on the test split and predicted-vs-true BSI from the phantoms."""
    from bsi_d2.evaluation import EvaluationResult, evaluate_dataset
    from bsi_d2.postprocess.rasterize import parse_class_thresholds
    from bsi_d2.report.html import write_evaluation_page
    from bsi_d2.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(cfg.BSI.TAXONOMY)
    gt_path = coco / "annotations" / "instances_test.json"
    gt = json.loads(gt_path.read_text(encoding="utf-8"))
    image_of = {Path(img["labelme_file"]).stem: img for img in gt["images"]}
    predictions: list[tuple[int, Instances]] = []
    bsi_pairs: list[tuple[str, float, float]] = []
    reference_pairs: list[tuple[float, float]] = []  # against the geometric reference BSI
    withheld = 0  # scans analysed but failing quality control: no BSI to compare
    for scan_dir, record in _analysed_records(predict_dir):
        patient = Path(record["source"][0]).stem
        # the model is scored on every scan it segmented; only scans with a reported BSI
        # (status ok) enter the BSI agreement
        predictions.append(
            (image_of[patient]["id"], out.read_predictions(scan_dir / out.PREDICTIONS_FILE))
        )
        if record["status"] != out.STATUS_OK:
            withheld += 1
            continue
        truth = json.loads((phantoms / "truth" / f"{patient}.json").read_text(encoding="utf-8"))
        bsi_pairs.append((record["key"], float(record["bsi"]), float(truth["bsi"])))
        if "reference" in truth:
            reference_pairs.append((float(record["bsi"]), float(truth["reference"]["bsi"])))
    evaluation = evaluate_dataset(
        gt_path,
        predictions,
        taxonomy,
        eval_dir,
        score_thresh=float(cfg.BSI.SCORE_THRESH),
        class_thresh=parse_class_thresholds(list(cfg.BSI.CLASS_SCORE_THRESH)),
    )
    page = write_evaluation_page(eval_dir, evaluation, bsi_pairs)
    from bsi_d2.evaluation import bsi_agreement

    agreement = bsi_agreement([p for _, p, _ in bsi_pairs], [t for _, _, t in bsi_pairs])
    to_reference = bsi_agreement([p for p, _ in reference_pairs], [t for _, t in reference_pairs])
    (eval_dir / "bsi_pairs.json").write_text(json.dumps(bsi_pairs, indent=1), encoding="utf-8")
    typed = EvaluationResult.from_dict(evaluation)
    headline = {
        "skeleton_pixel_f1": typed.skeleton.f1,
        "skeleton_pixel_precision": typed.skeleton.precision,
        "skeleton_pixel_sensitivity": typed.skeleton.sensitivity,
        "mean_f1_without_decoys": evaluation["pixel"]["mean_without_decoys"]["f1"],
        "lesion_dice": typed.lesion.dice_pooled,
        "lesion_pixel_precision": typed.lesion.precision,
        "lesion_pixel_sensitivity": typed.lesion.sensitivity,
        "mask_ap": typed.segm.ap,
        "scan_sensitivity": typed.scan.get("sensitivity"),
        "scan_specificity": typed.scan.get("specificity"),
        "lesion_sensitivity_at_1fp": typed.lesion_detection.sensitivity_at_fp.get("1"),
        "lesion_froc_score": typed.lesion_detection.froc_score,
        "lesion_count_mae": typed.burden.get("count_mean_absolute_error"),
        "burden_group_kappa": typed.burden.get("group_kappa"),
        "bsi_pearson_r": agreement.get("pearson_r"),
        "bsi_spearman_rho": agreement.get("spearman_rho"),
        "bsi_mean_difference": agreement.get("mean_difference"),
        # the same predicted BSIs against the phantoms' geometric reference (not the masks)
        "bsi_reference_pearson_r": to_reference.get("pearson_r"),
        "bsi_reference_mean_difference": to_reference.get("mean_difference"),
        "test_scans": len(bsi_pairs),
        "qc_failed_scans": withheld,
    }
    return {"headline": headline, "page": str(page)}


def _print_summary(summary: dict) -> None:
    m = summary["metrics"]

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(
        "\nbsi_d2 demo: results on held-out synthetic scans "
        f"({m['test_scans']} scans, engine {summary['engine']}, {summary['device']})"
    )
    if m.get("qc_failed_scans"):
        print(f"  {m['qc_failed_scans']} more scan(s) failed quality control (no BSI to compare)")
    print(
        f"  skeleton pixel F1        {f(m['skeleton_pixel_f1'])}   "
        f"(precision {f(m['skeleton_pixel_precision'])}, "
        f"sensitivity {f(m['skeleton_pixel_sensitivity'])})"
    )
    print(f"  lesion Dice              {f(m['lesion_dice'])}")
    print(
        f"  lesion detection         sensitivity at 1 FP/scan {f(m['lesion_sensitivity_at_1fp'])}"
        f"   FROC score {f(m['lesion_froc_score'])}"
    )
    print(f"  mask AP (COCO)           {f(m['mask_ap'])}")
    print(
        f"  lesion count MAE         {f(m['lesion_count_mae'])}   "
        f"burden group kappa {f(m['burden_group_kappa'])}"
    )
    print(
        f"  BSI Pearson r            {f(m['bsi_pearson_r'])}   "
        f"Spearman rho {f(m['bsi_spearman_rho'])}"
    )
    if m.get("bsi_reference_pearson_r") is not None:
        print(
            f"  BSI vs geometric ref. r  {f(m['bsi_reference_pearson_r'])}   "
            f"mean difference {f(m['bsi_reference_mean_difference'])}"
        )
    print(f"  stage seconds            {summary['seconds']}")
    print(f"\n  reports:    {summary['report_index']}")
    print(f"  evaluation: {summary['evaluation_page']}")
    print(
        "  These are model outputs on synthetic data, an aid for checking the toolkit, "
        "not a diagnosis."
    )
