"""Splits and folds grouped by patient: no patient crosses splits, the image fractions are kept
approximately, the result is seeded and order-free, and ``bsi-d2 convert --group-by patient``
takes the patients from ``<stem>.meta.json`` companions or a ``file,group`` CSV."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsi_d2.cli import main as cli_main
from bsi_d2.data.convert import convert_labelme_folder
from bsi_d2.data.splits import SPLIT_NAMES, fixed_split, kfold_chunks, kfold_splits
from bsi_d2.io.base import META_SUFFIX
from bsi_d2.io.labelme import labelme_shape, write_labelme

RATIOS = (0.8, 0.1, 0.1)
H, W = 24, 16
SQUARE = [(2, 2), (8, 2), (8, 8), (2, 8)]


def _population(sizes: list[int]) -> tuple[list[str], list[str]]:
    """Keys and their groups: group g holds ``sizes[g]`` scans."""
    keys, groups = [], []
    for g, size in enumerate(sizes):
        for i in range(size):
            keys.append(f"pt{g:03d}_scan{i}.png")
            groups.append(f"pt{g:03d}")
    return keys, groups


def _sizes(kind: str, rng: random.Random) -> list[int]:
    n_groups = rng.randint(12, 60)
    if kind == "singletons":
        return [1] * n_groups
    if kind == "few scans each":
        return [rng.randint(1, 4) for _ in range(n_groups)]
    if kind == "long tail":
        return [min(12, int(rng.expovariate(0.4)) + 1) for _ in range(n_groups)]
    return [rng.randint(1, 3) for _ in range(n_groups)] + [15]  # one patient followed for years


def _group_map(keys: list[str], groups: list[str]) -> dict[str, str]:
    return dict(zip(keys, groups, strict=True))


KINDS = ("singletons", "few scans each", "long tail", "one large group")


@pytest.mark.parametrize("kind", KINDS)
def test_no_group_crosses_the_fixed_split_and_the_fractions_hold(kind):
    for seed in range(40):
        rng = random.Random(f"{kind}{seed}")
        keys, groups = _population(_sizes(kind, rng))
        strata = [rng.random() < 0.3 for _ in keys] if seed % 2 else None
        parts = fixed_split(keys, RATIOS, seed=seed, strata=strata, groups=groups)
        group_of = _group_map(keys, groups)
        owners = {}
        for name in SPLIT_NAMES:
            for key in parts[name]:
                assert owners.setdefault(group_of[key], name) == name, (seed, key)
        assert sorted(k for name in SPLIT_NAMES for k in parts[name]) == sorted(keys)
        largest = max(groups.count(g) for g in set(groups))
        for name, ratio in zip(SPLIT_NAMES, RATIOS, strict=True):
            target = ratio * len(keys)
            if strata is None:  # the bound the greedy deal guarantees
                assert target - 2 * largest < len(parts[name]) < target + largest, (seed, name)
            else:
                assert abs(len(parts[name]) - target) <= 2 * largest + 1, (seed, name)


@pytest.mark.parametrize("kind", KINDS)
def test_no_group_crosses_folds_and_chunks_are_balanced(kind):
    for seed in range(40):
        rng = random.Random(f"folds{kind}{seed}")
        keys, groups = _population(_sizes(kind, rng))
        folds = rng.choice((3, 5, 10))
        strata = [rng.random() < 0.3 for _ in keys] if seed % 2 else None
        group_of = _group_map(keys, groups)
        chunks = kfold_chunks(keys, folds, seed=seed, strata=strata, groups=groups)
        owner = {}
        for k, chunk in enumerate(chunks):
            for key in chunk:
                assert owner.setdefault(group_of[key], k) == k, (seed, key)
        assert sorted(k for chunk in chunks for k in chunk) == sorted(keys)
        if strata is None:
            largest = max(groups.count(g) for g in set(groups))
            sizes = [len(chunk) for chunk in chunks]
            assert max(sizes) - min(sizes) <= largest, (seed, sizes)
        for fold in kfold_splits(keys, folds, seed=seed, strata=strata, groups=groups):
            seen = [{group_of[key] for key in fold[name]} for name in SPLIT_NAMES]
            assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
            assert sum(len(fold[name]) for name in SPLIT_NAMES) == len(keys)


def test_grouped_splits_are_seeded_and_free_of_input_order():
    keys, groups = _population([1, 2, 3, 1, 1, 2, 4, 1, 1, 2] * 4)
    pairs = list(zip(keys, groups, strict=True))
    random.Random(3).shuffle(pairs)
    keys2, groups2 = [k for k, _ in pairs], [g for _, g in pairs]
    first = fixed_split(keys, RATIOS, seed=7, groups=groups)
    assert first == fixed_split(keys2, RATIOS, seed=7, groups=groups2)
    assert first != fixed_split(keys, RATIOS, seed=8, groups=groups)
    assert kfold_splits(keys, 5, seed=7, groups=groups) == kfold_splits(
        keys2, 5, seed=7, groups=groups2
    )
    assert kfold_chunks(keys, 5, seed=7, groups=groups) != kfold_chunks(
        keys, 5, seed=8, groups=groups
    )


def test_a_split_of_ratio_zero_gets_no_group_and_singletons_meet_the_counts():
    keys, groups = _population([1, 2, 3, 2, 1, 5, 1])
    parts = fixed_split(keys, (1, 0, 1), seed=2, groups=groups)
    assert parts["val"] == [] and parts["train"] and parts["test"]
    keys = [f"scan_{i:03d}" for i in range(100)]
    parts = fixed_split(keys, RATIOS, seed=0, groups=keys)
    assert [len(parts[name]) for name in SPLIT_NAMES] == [80, 10, 10]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fixed_split(["a", "b"], RATIOS, groups=["p"]), "groups has 1 entries"),
        (lambda: kfold_chunks(["a", "b"], 3, groups=["p", None]), "needs a group"),
        (lambda: kfold_chunks(["a", "a"], 3, groups=["p", "q"]), "unique"),
        (lambda: fixed_split(["a"], (-1, 1, 1), groups=["p"]), "non-negative"),
    ],
)
def test_bad_grouped_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- bsi-d2 convert --group-by patient -------------------------------------------------------


def _scan(root: Path, rel: str, lesion: bool, image_rel: str | None = None) -> Path:
    """A Labelme file ``rel`` under ``root`` and its 16-bit image (``image_rel`` beside it)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image = path.with_name(image_rel or path.with_suffix(".png").name)
    pixels = np.random.default_rng(len(rel)).integers(0, 3000, (H, W), dtype=np.uint16)
    Image.fromarray(pixels).save(image)
    shapes = [labelme_shape("skull", SQUARE)]
    if lesion:
        shapes.append(labelme_shape("lesion", [(10, 10), (14, 10), (14, 14)]))
    write_labelme(path, image.name, H, W, shapes)
    return path


def _meta(path: Path, **fields) -> None:
    path.write_text(json.dumps({"key": path.name[: -len(META_SUFFIX)], **fields}))


# 8 patients, 1 to 4 scans each: 19 scans
PATIENTS = {f"pt{p:016x}": n for p, n in enumerate([4, 1, 2, 3, 1, 2, 4, 2])}


def _patient_folder(src: Path) -> dict[str, str]:
    """Labelme files in two layouts, each with the patient in a meta.json: the phantom's
    (``<id>.meta.json`` beside ``<id>.json``) and preprocess's (``<key>.meta.json`` beside the
    image ``<key>.png``, the JSON named otherwise). Returns Labelme file -> patient."""
    patient_of = {}
    for p, (patient, n) in enumerate(PATIENTS.items()):
        for i in range(n):
            if p % 2:
                rel = f"site{p % 3}/s{p}_{i}.json"
                _scan(src, rel, lesion=i == 0)
                _meta((src / rel).with_name(f"s{p}_{i}{META_SUFFIX}"), patient_key=patient)
            else:
                rel = f"annotated/k{p}_{i}_label.json"
                _scan(src, rel, lesion=i == 1, image_rel=f"k{p}_{i}.png")
                _meta(src / f"annotated/k{p}_{i}{META_SUFFIX}", patient_key=patient)
            patient_of[rel] = patient
    return patient_of


def _patients(out: Path, folder: str, split: str, patient_of: dict[str, str]) -> set[str]:
    coco = json.loads((out / "annotations" / folder / f"instances_{split}.json").read_text())
    return {patient_of[image["labelme_file"]] for image in coco["images"]}


def _assert_patients_whole(out: Path, patient_of: dict[str, str], folds: int) -> None:
    for folder in ["", *(f"fold{k}" for k in range(folds))]:
        seen = [_patients(out, folder, split, patient_of) for split in SPLIT_NAMES]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]), folder
        assert sum(len(s) for s in seen) == len(set(patient_of.values()))


def test_cli_groups_by_the_patient_key_of_the_meta_json(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    patient_of = _patient_folder(src)
    args = ["convert", str(src), "--out", str(out), "--group-by", "patient", "--folds", "3"]
    assert cli_main([*args, "--seed", "4", "--workers", "1"]) == 0
    assert "(by patient: " in capsys.readouterr().out
    _assert_patients_whole(out, patient_of, folds=3)
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["files_read"] == 19 and report["skipped_files"] == []  # meta.json: no Labelme
    grouping = report["grouping"]
    assert grouping["by"] == "patient" and grouping["source"] == "meta.json"
    assert grouping["groups"] == 8 and sum(grouping["groups_per_split"].values()) == 8
    assert sum(grouping["test_groups_per_fold"]) == 8
    assert report["options"]["group_by"] == "patient"
    assert not any(p in json.dumps(report) for p in PATIENTS)  # counts, never the pseudonyms
    info = json.loads((out / "annotations/instances_train.json").read_text())["info"]
    assert info["group_by"] == "patient"
    again = tmp_path / "again"
    assert cli_main([*args[:3], str(again), *args[4:], "--seed", "4", "--workers", "1"]) == 0
    for name in ("instances_train.json", "fold2/instances_test.json"):
        assert (out / "annotations" / name).read_bytes() == (
            again / "annotations" / name
        ).read_bytes()


def test_without_group_by_nothing_is_grouped(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _patient_folder(src)
    report = convert_labelme_folder(src, out, folds=3, workers=1)
    assert report.grouping == {} and report.options["group_by"] is None
    assert (
        "group_by" not in json.loads((out / "annotations/instances_all.json").read_text())["info"]
    )


def test_missing_patient_keys_are_an_error_naming_the_files(tmp_path, caplog):
    src, out = tmp_path / "src", tmp_path / "out"
    _patient_folder(src)
    (src / "site1/s1_0.meta.json").unlink()
    _meta(src / "site0/s3_1.meta.json", patient_key=None)
    (src / "annotated/k2_0.meta.json").write_text("{")
    with caplog.at_level(logging.ERROR):
        args = ["convert", str(src), "--out", str(out), "--group-by", "patient", "--workers", "1"]
        assert cli_main(args) == 2
    message = caplog.text
    assert "3 of 19 Labelme file(s) have no group" in message
    assert "site1/s1_0.json (no s1_0.meta.json)" in message
    assert "site0/s3_1.json (no patient_key in s3_1.meta.json)" in message
    assert "annotated/k2_0_label.json (unreadable k2_0.meta.json" in message
    assert "bsi-d2 preprocess" in message and "--groups" in message
    assert not out.exists()  # nothing written


def test_cli_groups_from_a_csv_by_stem_or_relative_path(tmp_path, caplog):
    src, out = tmp_path / "src", tmp_path / "out"
    patient_of = _patient_folder(src)
    rows = ["File,Group,note"]
    for i, (rel, patient) in enumerate(sorted(patient_of.items())):
        named = Path(rel).stem if i % 2 else rel  # the stem, or the path relative to SRC
        rows.append(f"{named},{patient[-4:]},x")  # the CSV's own group names
    rows += ["gone.json,p9,", ""]
    (tmp_path / "map.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    for meta in src.rglob(f"*{META_SUFFIX}"):
        meta.unlink()  # the CSV alone gives the patients
    args = ["convert", str(src), "--out", str(out), "--groups", str(tmp_path / "map.csv")]
    with caplog.at_level(logging.WARNING):
        assert cli_main([*args, "--folds", "4", "--workers", "1"]) == 0
    assert "1 row(s) name no Labelme file" in caplog.text and "gone.json" in caplog.text
    _assert_patients_whole(out, patient_of, folds=4)
    grouping = json.loads((out / "conversion_report.json").read_text())["grouping"]
    assert grouping["by"] == "patient" and grouping["source"] == "csv"
    assert grouping["groups"] == 8 and grouping["unmatched_rows"] == ["gone.json"]


def _csv(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "groups.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    "rows, message",
    [
        (("file,group", "a/scan.json,p1"), r"1 of 2 Labelme file\(s\) have no group: b/scan.json"),
        (("file,patient", "a/scan.json,p1"), "no column 'group'"),
        (("file,group", "a/scan.json,"), "line 2: needs a file and a group"),
        (("file,group", "scan,p1"), "'scan' matches 2 files"),
        (("file,group", "a/scan,p1", "a/scan.json,p2", "b/scan,p1"), "two different groups"),
    ],
)
def test_bad_groups_csv_is_refused_before_writing(tmp_path, rows, message):
    src, out = tmp_path / "src", tmp_path / "out"
    _scan(src, "a/scan.json", lesion=True)
    _scan(src, "b/scan.json", lesion=False)
    with pytest.raises(ValueError, match=message):
        convert_labelme_folder(src, out, groups=_csv(tmp_path, *rows), workers=1)
    assert not out.exists()


def test_unknown_group_by_and_a_missing_csv_are_refused(tmp_path):
    src = tmp_path / "src"
    _scan(src, "a.json", lesion=False)
    with pytest.raises(ValueError, match="group_by must be"):
        convert_labelme_folder(src, tmp_path / "out", group_by="study", workers=1)
    with pytest.raises(ValueError, match="groups file not found"):
        convert_labelme_folder(src, tmp_path / "out", groups=tmp_path / "none.csv", workers=1)
