"""Learning-loop experiments on a finished demo's phantoms, split and config (issue #18).

    bsi-d2 demo --out output/demo                       # 100 phantoms: 70 train, 10 val, 20 test
    python tools/learning_experiments.py semi output/demo --labelled 10 --rounds 2

``semi``: seed 003's question on phantoms. The first ``--labelled`` training scans (a seeded
draw from the demo's train split) are kept as labelled; the other training scans become
unlabelled DICOM files. ``bsi-d2 self-train`` then trains round 0 on the labelled scans alone and
rounds 1..K on them plus the previous round's pseudo-labels (thresholds chosen on the demo's
validation split), each round with the demo's config and iteration count, so every arm has the
same compute budget. The demo's own model (all training scans labelled, the same budget) is the
upper arm. Every model is scored on the demo's held-out test split exactly as the demo scores
its own (predict, then pixel metrics and BSI agreement against the phantoms' truth), under
``OUT/eval/<arm>/``. Prints a Markdown table.

    bsi-d2 demo --out output/benign --label-benign      # the same scans, look-alikes labelled
    python tools/learning_experiments.py benign output/benign --without output/demo

``benign``: the demo trained with the benign class against the demo trained without it, both
scored on the benign-labelled test split: lesion-level benign/malignant accuracy, sensitivity,
specificity and AUC, and the lesion class's false positives on benign look-alikes per scan.

    python tools/learning_experiments.py negatives output/demo --normal 40

``negatives``: seed 001's negative mining. Scans known to be free of metastases (phantoms of
another seed drawn without lesions, none of them in the demo's split) go through
``bsi-d2 mine-negatives`` with the demo's model; the demo's training is then repeated on its
labelled scans plus the mined set (``DATASETS.PSEUDO``, with the ``hard_negative`` class the
mining adds), the same config and iterations. Lesion precision and false positives per scan on
the demo's test split, before and after.

    python tools/learning_experiments.py active output/demo --start 10 --step 10 --steps 3

``active``: which scan to annotate next. Both arms start from the same ``--start`` labelled
training scans (the ``semi`` draw) and model; at each of ``--steps`` steps an arm adds ``--step``
scans of the rest of the demo's train split, with their phantom truth standing in for a person's
annotation: the uncertainty arm the first ``--step`` of ``bsi-d2 rank-unlabelled`` by its latest
model, the random arm those of a seeded random order. Every model is trained from the same
initial weights with the demo's config and iterations (the same budget) and scored on the demo's
test split. Prints lesion Dice (and the rest) after each step, for both arms.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def _summary(folder: Path) -> dict:
    return json.loads((folder / "demo_summary.json").read_text(encoding="utf-8"))


def demo_config(demo: Path) -> tuple[dict, Path]:
    """A finished demo's options and the config file it trained with."""
    from bsi_d2.workflows.demo import resolve_config

    options = _summary(demo)["options"]
    return options, resolve_config(options["config"] or "mask_rcnn_R_18_FPN_cpu_lesion_bsi.yaml")


def _train_split(demo: Path) -> dict:
    return json.loads((demo / "coco" / "annotations" / "instances_train.json").read_text("utf-8"))


def first_labelled(demo: Path, labelled: int, seed: int) -> set[int]:
    """The image ids of ``labelled`` training scans, a draw from ``seed``."""
    ids = sorted(img["id"] for img in _train_split(demo)["images"])
    return set(np.random.default_rng(seed).permutation(ids)[:labelled].tolist())


def split_labelled(demo: Path, out: Path, labelled: int | set[int], seed: int = 0
                   ) -> tuple[Path, Path, str]:  # fmt: skip
    """A COCO root under ``out`` whose train split holds ``labelled`` of the demo's training
    scans (a count drawn from ``seed``, or those image ids; val and test as the demo's), and a
    folder of the other training scans' DICOM files; (coco root, unlabelled folder, the labelled
    split's data-set name)."""
    source = demo / "coco"
    coco = out / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    if not (coco / "images").exists():
        (coco / "images").symlink_to((source / "images").resolve(), target_is_directory=True)
    train = _train_split(demo)
    keep = labelled if isinstance(labelled, set) else first_labelled(demo, labelled, seed)
    subset = dict(train)
    subset["images"] = [img for img in train["images"] if img["id"] in keep]
    subset["annotations"] = [a for a in train["annotations"] if a["image_id"] in keep]
    # the labelled subset is this root's train split (the registered splits are train/val/test)
    (coco / "annotations" / "instances_train.json").write_text(json.dumps(subset), "utf-8")
    for name in ("val", "test"):
        shutil.copy(source / "annotations" / f"instances_{name}.json", coco / "annotations")
    unlabelled = out / "unlabelled"
    unlabelled.mkdir(parents=True, exist_ok=True)
    for img in train["images"]:
        if img["id"] not in keep:
            stem = Path(img["labelme_file"]).stem
            target = unlabelled / f"{stem}.dcm"
            if not target.exists():
                shutil.copy(demo / "phantoms" / "dicom" / f"{stem}.dcm", target)
    return coco, unlabelled, "bsi_train"


def self_train(demo: Path, out: Path, coco: Path, unlabelled: Path, dataset: str, rounds: int,
               ratio: float) -> Path:  # fmt: skip
    from bsi_d2 import cli

    options, config = demo_config(demo)
    argv = ["self-train", "--config-file", str(config), "--out", str(out / "self_train"),
            "--rounds", str(rounds), "--unlabelled", str(unlabelled), "--no-progress",
            "BSI.DATASET_ROOT", str(coco), "DATASETS.TRAIN", f"('{dataset}',)",
            "DATASETS.TEST", "('bsi_val',)", "DATASETS.PSEUDO_RATIO", str(ratio),
            "MODEL.DEVICE", "cpu", "SEED", str(options["seed"])]  # fmt: skip
    if options.get("iterations") is not None:
        argv += ["SOLVER.MAX_ITER", str(options["iterations"])]
    argv += list(options.get("opts") or [])
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"self-train exited with {code}")
    return out / "self_train"


def evaluate(demo: Path, weights_dir: Path, out: Path, opts: list[str] | None = None) -> dict:
    """The demo's predict and evaluate stages with the model in ``weights_dir`` on the demo's
    own phantoms and split; the headline metrics."""
    from bsi_d2.workflows.demo import rerun_demo

    return rerun_demo(demo, out, weights_dir, opts)["metrics"]


def semi(args: argparse.Namespace) -> None:
    demo, out = args.demo.resolve(), args.out.resolve()
    coco, unlabelled, dataset = split_labelled(demo, out, args.labelled, args.seed)
    trained = self_train(demo, out, coco, unlabelled, dataset, args.rounds, args.ratio)
    state = json.loads((trained / "self_train.json").read_text(encoding="utf-8"))
    total = len(json.loads((demo / "coco/annotations/instances_train.json").read_text())["images"])
    arms = []
    for entry in state["rounds"]:
        k = int(entry["round"])
        pseudo = state["rounds"][k - 1].get("pseudo") if k else None
        kept = (pseudo or {}).get("images")
        label = (
            f"{args.labelled} labelled"
            if k == 0
            else f"{args.labelled} labelled + {kept} pseudo-labelled (round {k})"
        )
        arms.append((label, trained / f"round{k}"))
    arms.append((f"all {total} labelled (the demo's model)", demo / "train"))
    rows = []
    for i, (label, weights_dir) in enumerate(arms):
        metrics = evaluate(demo, weights_dir, out / "eval" / f"arm{i}")
        rows.append((label, metrics))
    (out / "semi_results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print_table(rows)


def f(value, digits: int = 3) -> str:
    """A table cell: the number to ``digits`` places, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _detection(folder: Path) -> dict:
    evaluation = json.loads((folder / "evaluation" / "evaluation.json").read_text("utf-8"))
    return evaluation["lesion_detection"]


def classification_of(predict_dir: Path, coco: Path, out: Path) -> dict:
    """evaluation.json's ``lesion_classification`` of a predict folder's test scans against the
    benign-labelled test split (``coco``), whatever taxonomy the model had."""
    from bsi_d2.evaluation import evaluate_dataset
    from bsi_d2.inference import outputs as outputs_module
    from bsi_d2.taxonomy import load_taxonomy

    taxonomy = load_taxonomy("benign")
    gt_path = coco / "annotations" / "instances_test.json"
    gt = json.loads(gt_path.read_text(encoding="utf-8"))
    image_of = {Path(img["labelme_file"]).stem: img["id"] for img in gt["images"]}
    predictions = []
    for scan_dir in sorted((predict_dir / "scans").iterdir()):
        record = json.loads((scan_dir / "bsi.json").read_text(encoding="utf-8"))
        patient = Path(record["source"][0]).stem
        instances = outputs_module.read_predictions(scan_dir / "predictions.json")
        predictions.append((image_of[patient], instances))
    out.mkdir(parents=True, exist_ok=True)
    demo_eval = json.loads((predict_dir.parent / "evaluation" / "evaluation.json").read_text())
    evaluation = evaluate_dataset(gt_path, predictions, taxonomy, out,
                                  score_thresh=demo_eval["score_thresh"],
                                  class_thresh=demo_eval["class_thresh"])  # fmt: skip
    return evaluation.get("lesion_classification") or {}


def benign(args: argparse.Namespace) -> None:
    with_benign, without = args.demo.resolve(), args.without.resolve()
    coco = with_benign / "coco"
    rows = [
        ("with the benign class", classification_of(with_benign / "predict", coco,
                                                    with_benign / "learning" / "benign_eval")),
        ("without it", classification_of(without / "predict", coco,
                                         with_benign / "learning" / "without_eval")),
    ]  # fmt: skip
    (with_benign / "learning").mkdir(exist_ok=True)
    (with_benign / "learning" / "benign_results.json").write_text(json.dumps(rows, indent=1))

    print("| model | benign/malignant AUC | accuracy | sensitivity | specificity | "
          "lesion calls on benign look-alikes per scan |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, c in rows:
        print(f"| {label} | {f(c.get('auc'))} | {f(c.get('accuracy'))} | "
              f"{f(c.get('sensitivity'))} | {f(c.get('specificity'))} | "
              f"{f(c.get('lesion_fp_on_benign_per_scan'), 2)} |")  # fmt: skip


def normal_scans(out: Path, n: int, seed: int) -> Path:
    """DICOM files of the phantoms without lesions among ``n`` of ``seed``, in ``out``."""
    from bsi_d2.phantom import write_phantoms

    phantoms = out / "phantoms"
    if not (phantoms / "manifest.json").is_file():
        write_phantoms(phantoms, n, seed=seed, workers=1)
    normal = out / "normal"
    normal.mkdir(parents=True, exist_ok=True)
    for truth in sorted((phantoms / "truth").glob("*.json")):
        if json.loads(truth.read_text(encoding="utf-8"))["lesion_count"] == 0:
            target = normal / f"{truth.stem}.dcm"
            if not target.exists():
                shutil.copy(phantoms / "dicom" / f"{truth.stem}.dcm", target)
    return normal


def negatives(args: argparse.Namespace) -> None:
    from bsi_d2 import cli

    demo, out = args.demo.resolve(), args.out.resolve()
    _, config = demo_config(demo)
    normal = normal_scans(out, args.normal, args.seed)
    mined = out / "mined"
    if not (mined / "negatives.json").is_file():
        weights = str(demo / "train" / "model_final.pth")
        code = cli.main(["mine-negatives", "--config-file", str(config), "--weights", weights,
                         "--out", str(mined), "--no-progress", str(normal),
                         "--opts", "MODEL.DEVICE", "cpu"])  # fmt: skip
        if code != 0:
            raise SystemExit(f"mine-negatives exited with {code}")
    taxonomy = mined / "taxonomy.yaml"
    extra = ["BSI.TAXONOMY", str(taxonomy)] if taxonomy.is_file() else []
    pseudo = ["DATASETS.PSEUDO", str(mined / "annotations" / "instances_negatives.json"),
              "DATASETS.PSEUDO_RATIO", str(args.ratio)]  # fmt: skip
    train_dir = train_on(demo, demo / "coco", out / "train", [*pseudo, *extra])
    after = out / "eval"
    evaluate(demo, train_dir, after, extra)
    mined_summary = json.loads((mined / "negatives.json").read_text(encoding="utf-8"))
    rows = [("before (the demo's model)", _detection(demo)),
            ("after one round of negative mining", _detection(after))]  # fmt: skip
    (out / "negatives_results.json").write_text(json.dumps(
        {"mined": {k: v for k, v in mined_summary.items() if k != "scans"}, "rows": rows},
        indent=1))  # fmt: skip
    print(f"normal scans: {len(list(normal.glob('*.dcm')))}")
    print("| model | lesion precision | false positives per scan | lesion sensitivity | "
          "sensitivity at 1 FP/scan |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, d in rows:
        print(
            f"| {label} | {d['precision']:.3f} | {d['fp_per_scan']:.2f} | "
            f"{d['sensitivity']:.3f} | {d['sensitivity_at_fp'].get('1', float('nan')):.3f} |"
        )


def train_on(demo: Path, coco: Path, out: Path, extra: list[str] | None = None) -> Path:
    """The demo's training (config, iterations, seed) on ``coco``'s train split, in ``out``."""
    from bsi_d2 import cli

    options, config = demo_config(demo)
    if not (out / "model_final.pth").is_file():
        argv = ["train", "--config-file", str(config), "BSI.DATASET_ROOT", str(coco),
                "DATASETS.TRAIN", "('bsi_train',)", "DATASETS.TEST", "('bsi_val',)",
                "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu", "SEED", str(options["seed"]),
                *(extra or [])]  # fmt: skip
        if options.get("iterations") is not None:
            argv += ["SOLVER.MAX_ITER", str(options["iterations"])]
        argv += list(options.get("opts") or [])
        if cli.main(argv) != 0:
            raise SystemExit(f"training in {out} failed")
    return out


def next_scans(demo: Path, model: Path, unlabelled: Path, out: Path, count: int,
               random_seed: int | None) -> list[str]:  # fmt: skip
    """The file stems of the ``count`` unlabelled scans to annotate next: ``rank-unlabelled``
    by ``model`` (uncertainty), or a seeded random order."""
    from bsi_d2 import cli
    from bsi_d2.inference.batch import content_key

    _, config = demo_config(demo)
    ranking = out / "ranking.json"
    if not ranking.is_file():
        argv = ["rank-unlabelled", str(unlabelled), "--config-file", str(config), "--weights",
                str(model / "model_final.pth"), "--out", str(out), "--top", "0", "--no-progress",
                "--device", "cpu"]  # fmt: skip
        if random_seed is not None:
            argv += ["--random", str(random_seed)]
        if cli.main(argv) != 0:
            raise SystemExit(f"rank-unlabelled into {out} failed")
    stem_of = {content_key([p]): p.stem for p in sorted(unlabelled.glob("*.dcm"))}
    order = [row["key"] for row in json.loads(ranking.read_text(encoding="utf-8"))["scans"]]
    return [stem_of[key] for key in order if key in stem_of][:count]


def active(args: argparse.Namespace) -> None:
    demo, out = args.demo.resolve(), args.out.resolve()
    id_of = {Path(img["labelme_file"]).stem: img["id"] for img in _train_split(demo)["images"]}
    start = first_labelled(demo, args.start, args.seed)
    coco, _, _ = split_labelled(demo, out / "step0", start)
    model0 = train_on(demo, coco, out / "step0" / "train")
    metrics0 = evaluate(demo, model0, out / "step0" / "eval")
    results = {"start": args.start, "step": args.step, "steps": args.steps,
               "rows": [(0, args.start, metrics0, metrics0)]}  # fmt: skip
    arms = {"uncertainty": None, "random": args.seed}
    labelled = {arm: set(start) for arm in arms}
    model = {arm: model0 for arm in arms}
    for k in range(1, args.steps + 1):
        row_metrics = {}
        for arm, random_seed in arms.items():
            here = out / arm / f"step{k}"
            _, pool, _ = split_labelled(demo, here / "pool", labelled[arm])
            chosen = next_scans(demo, model[arm], pool, here / "rank", args.step, random_seed)
            labelled[arm] |= {id_of[stem] for stem in chosen}
            coco, _, _ = split_labelled(demo, here, labelled[arm])
            model[arm] = train_on(demo, coco, here / "train")
            row_metrics[arm] = evaluate(demo, model[arm], here / "eval")
        results["rows"].append((k, len(labelled["random"]), row_metrics["uncertainty"],
                                row_metrics["random"]))  # fmt: skip
        (out / "active_results.json").write_text(json.dumps(results, indent=1), "utf-8")
    print("| step | labelled scans | lesion Dice, uncertainty | lesion Dice, random | "
          "BSI r, uncertainty | BSI r, random |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, n, u, r in results["rows"]:
        print(f"| {k} | {n} | {f(u['lesion_dice'])} | {f(r['lesion_dice'])} | "
              f"{f(u['bsi_pearson_r'])} | {f(r['bsi_pearson_r'])} |")  # fmt: skip


def print_table(rows: list[tuple[str, dict]]) -> None:
    print("| arm | skeleton F1 | lesion Dice | lesion sens. at 1 FP/scan | BSI r | mask AP | "
          "QC failed |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, m in rows:
        print(
            f"| {label} | {f(m['skeleton_pixel_f1'])} | {f(m['lesion_dice'])} | "
            f"{f(m.get('lesion_sensitivity_at_1fp'))} | {f(m['bsi_pearson_r'])} | "
            f"{f(m.get('mask_ap'))} | {m.get('qc_failed_scans', 0)} |"
        )


def _experiment(sub, name: str, help: str, demo_help: str = "a finished bsi-d2 demo folder",
                out: bool = True) -> argparse.ArgumentParser:  # fmt: skip
    """A sub-command reading a finished demo (and writing under ``--out``)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("demo", type=Path, help=demo_help)
    if out:
        p.add_argument("--out", type=Path, default=None, help=f"default DEMO/learning/{name}")
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="experiment", required=True)
    p = _experiment(sub, "semi", "labelled alone vs + pseudo-labels (rounds) vs all labelled")
    p.add_argument("--labelled", type=int, default=10, help="labelled training scans (10)")
    p.add_argument("--rounds", type=int, default=2, help="self-training rounds after round 0")
    p.add_argument("--ratio", type=float, default=0.5, help="DATASETS.PSEUDO_RATIO (0.5)")
    p.add_argument("--seed", type=int, default=0, help="which training scans stay labelled")
    p = _experiment(
        sub,
        "benign",
        "with vs without the benign class",
        "a finished bsi-d2 demo --label-benign folder",
        out=False,
    )
    p.add_argument("--without", type=Path, required=True, help="the same demo without it")
    p = _experiment(sub, "negatives", "before vs after one round of negative mining")
    p.add_argument("--normal", type=int, default=40, help="phantoms drawn for normal scans")
    p.add_argument("--seed", type=int, default=7, help="their seed (not the demo's)")
    p.add_argument("--ratio", type=float, default=0.2, help="DATASETS.PSEUDO_RATIO (0.2)")
    p = _experiment(sub, "active", "labelled-set growth by uncertainty ranking vs random")
    p.add_argument("--start", type=int, default=10, help="labelled training scans at step 0")
    p.add_argument("--step", type=int, default=10, help="scans annotated per step (10)")
    p.add_argument("--steps", type=int, default=3, help="steps (3)")
    p.add_argument("--seed", type=int, default=0, help="the first draw and the random order")
    args = parser.parse_args()
    if getattr(args, "out", "") is None:
        args.out = args.demo / "learning" / args.experiment
    experiments = {"semi": semi, "benign": benign, "negatives": negatives, "active": active}
    experiments[args.experiment](args)


if __name__ == "__main__":
    main()
