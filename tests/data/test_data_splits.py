"""Fixed splits and seed 000's k-fold: seeded, reproducible, partitions, 8:1:1, stratified."""

from __future__ import annotations

import random

import pytest

from bsi_d2.data.splits import fixed_split, kfold_chunks, kfold_splits, split_counts

KEYS = [f"scan_{i:03d}.png" for i in range(100)]


def test_kfold_is_reproducible_and_order_independent():
    shuffled = list(KEYS)
    random.Random(7).shuffle(shuffled)
    assert kfold_splits(KEYS, 10, seed=3) == kfold_splits(shuffled, 10, seed=3)
    assert kfold_splits(KEYS, 10, seed=3) != kfold_splits(KEYS, 10, seed=4)


def test_kfold_test_chunks_partition_the_set_in_8_1_1():
    folds = kfold_splits(KEYS, 10, seed=0)
    tests = [key for fold in folds for key in fold["test"]]
    assert sorted(tests) == sorted(KEYS)  # every scan tested exactly once
    chunks = kfold_chunks(KEYS, 10, seed=0)
    for k, fold in enumerate(folds):
        assert (len(fold["train"]), len(fold["val"]), len(fold["test"])) == (80, 10, 10)
        assert fold["test"] == chunks[k] and fold["val"] == chunks[(k + 1) % 10]
        assert set(fold["train"]) | set(fold["val"]) | set(fold["test"]) == set(KEYS)
        assert not set(fold["train"]) & (set(fold["val"]) | set(fold["test"]))


def test_uneven_counts_give_chunks_within_one():
    sizes = [len(c) for c in kfold_chunks(KEYS[:23], 10, seed=1)]
    assert sum(sizes) == 23 and max(sizes) - min(sizes) <= 1


def test_stratified_chunks_share_out_the_lesion_scans():
    has_lesion = [i % 5 == 0 for i in range(100)]  # 20 positives
    lesion = {k for k, h in zip(KEYS, has_lesion, strict=True) if h}
    for chunk in kfold_chunks(KEYS, 10, seed=0, strata=has_lesion):
        assert len(set(chunk) & lesion) == 2
    # without strata some chunk is almost surely off balance for this seed
    plain = kfold_chunks(KEYS, 10, seed=0)
    assert any(len(set(chunk) & lesion) != 2 for chunk in plain)


def test_fixed_split_ratios_partition_and_seed():
    parts = fixed_split(KEYS, (0.8, 0.1, 0.1), seed=5)
    assert [len(parts[n]) for n in ("train", "val", "test")] == [80, 10, 10]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(KEYS)
    assert parts == fixed_split(list(reversed(KEYS)), (0.8, 0.1, 0.1), seed=5)
    assert parts != fixed_split(KEYS, (0.8, 0.1, 0.1), seed=6)
    assert [len(v) for v in fixed_split(KEYS[:10], (8, 1, 1)).values()] == [8, 1, 1]


def test_fixed_split_stratified_keeps_negatives_everywhere():
    has_lesion = [i < 50 for i in range(100)]
    parts = fixed_split(KEYS, seed=0, strata=has_lesion)
    positives = set(KEYS[:50])
    assert [len(set(parts[n]) & positives) for n in ("train", "val", "test")] == [40, 5, 5]
    assert [len(set(parts[n]) - positives) for n in ("train", "val", "test")] == [40, 5, 5]


def test_split_counts_sum_to_n():
    assert split_counts(7, (0.8, 0.1, 0.1)) == [5, 1, 1]  # largest remainders: .7, .7
    assert split_counts(3, (0.8, 0.1, 0.1)) == [3, 0, 0]
    assert sum(split_counts(101, (0.7, 0.2, 0.1))) == 101


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kfold_splits(KEYS, 2), "folds >= 3"),
        (lambda: kfold_chunks(KEYS, 10, strata=[True]), "strata has 1 entries"),
        (lambda: kfold_chunks(["a", "a", "b"], 3), "unique"),
        (lambda: fixed_split(KEYS, (0.5, 0.5)), "three values|3 values"),
        (lambda: split_counts(5, (-1, 1, 1)), "non-negative"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
