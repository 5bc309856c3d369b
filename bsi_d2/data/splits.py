"""Seeded, reproducible train/val/test splits: a fixed split by ratios and seed 000's k-fold
cross-validation (10 folds, 8:1:1: fold k tests on chunk k, validates on chunk k + 1, trains on
the rest).

Every function takes the items' keys (e.g. relative file names) and returns keys. The result
depends only on the set of keys, the seed, the strata and the groups, never on the order the keys
come in. Optional strata (e.g. "has a lesion") are spread evenly over the splits/chunks. Optional
groups (e.g. the patient of each scan) are kept whole: every key of a group lands in the same
split/chunk, and the groups are dealt out so that the image counts approximate the ratios.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def _check_keys(keys: Sequence[str], strata: Sequence[Hashable] | None) -> list[Hashable]:
    """The strata labels (one stratum when None) after checking they fit unique keys."""
    if strata is not None and len(strata) != len(keys):
        raise ValueError(f"strata has {len(strata)} entries for {len(keys)} keys")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique")
    return list(strata) if strata is not None else [0] * len(keys)


def _shuffled_strata(
    keys: Sequence[str], seed: int, strata: Sequence[Hashable] | None
) -> list[list[str]]:
    """Keys grouped by stratum (strata in sorted order), each group sorted then shuffled."""
    labels = _check_keys(keys, strata)
    groups: dict[Hashable, list[str]] = {}
    for key, label in zip(keys, labels, strict=True):
        groups.setdefault(label, []).append(key)
    rng = np.random.default_rng(seed)
    out = []
    for label in sorted(groups, key=repr):
        members = sorted(groups[label])
        out.append([members[i] for i in rng.permutation(len(members))])
    return out


def _deal_groups(
    keys: Sequence[str],
    groups: Sequence[Hashable],
    shares: Sequence[float],
    seed: int,
    strata: Sequence[Hashable] | None,
) -> list[list[str]]:
    """Whole groups dealt to ``len(shares)`` bins: the groups in a seeded order (sorted, then
    shuffled), each to the bin furthest below its targets, its share of the images and of each
    stratum the group holds (ties to the earlier bin).

    Without strata a bin only receives a group while it holds fewer images than its share, so it
    ends less than one group above it; a bin with share 0 stays empty.
    """
    labels = _check_keys(keys, strata)
    if len(groups) != len(keys):
        raise ValueError(f"groups has {len(groups)} entries for {len(keys)} keys")
    if any(group is None for group in groups):
        raise ValueError("every key needs a group (got None)")
    stratum = {label: i for i, label in enumerate(sorted(set(labels), key=repr))}
    members: dict[Hashable, list[str]] = {}
    for key, group in zip(keys, groups, strict=True):
        members.setdefault(group, []).append(key)
    # per group: its keys in each stratum, then in all (so totals are balanced as well)
    held: dict[Hashable, np.ndarray] = {group: np.zeros(len(stratum) + 1) for group in members}
    for group, label in zip(groups, labels, strict=True):
        held[group][[stratum[label], -1]] += 1
    names = sorted(members, key=repr)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    shares = _ratios(shares)
    target = np.outer(shares / shares.sum(), sum(held.values()))  # bins x (strata, all)
    filled = np.zeros_like(target)
    bins: list[list[str]] = [[] for _ in shares]
    for group in order:
        # the squared distance to the targets grows least in the bin furthest below them
        chosen = int(np.argmin((filled - target) @ held[group]))
        filled[chosen] += held[group]
        bins[chosen] += members[group]
    return [sorted(b) for b in bins]


def kfold_chunks(
    keys: Sequence[str],
    folds: int = 10,
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
) -> list[list[str]]:
    """Partition ``keys`` into ``folds`` chunks whose sizes differ by at most one.

    With strata, each stratum is dealt round-robin over the chunks, continuing where the previous
    stratum stopped, so every chunk gets its share of each stratum (to within one).

    With groups (one per key, e.g. the patient), whole groups go to the chunks (GroupKFold-like):
    each, in a seeded order, to the chunk with the fewest images (with strata: the furthest below
    its share of the images and of the group's strata), so without strata chunk sizes differ by
    at most the size of the largest group.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    if groups is not None:
        return _deal_groups(keys, groups, [1.0] * folds, seed, strata)
    chunks: list[list[str]] = [[] for _ in range(folds)]
    position = 0
    for members in _shuffled_strata(keys, seed, strata):
        for key in members:
            chunks[position % folds].append(key)
            position += 1
    return [sorted(chunk) for chunk in chunks]


def kfold_splits(
    keys: Sequence[str],
    folds: int = 10,
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
) -> list[dict[str, list[str]]]:
    """Seed 000's k-fold: fold k has test = chunk k, val = chunk (k + 1) mod N, train = the rest
    (8:1:1 for 10 folds). Each key is tested in exactly one fold; with groups (see
    :func:`kfold_chunks`) no group crosses train, val and test."""
    if folds < 3:
        raise ValueError(f"k-fold with train, val and test needs folds >= 3, got {folds}")
    chunks = kfold_chunks(keys, folds, seed, strata, groups)
    out = []
    for k in range(folds):
        val_k = (k + 1) % folds
        train = sorted(key for i, c in enumerate(chunks) if i not in (k, val_k) for key in c)
        out.append({"train": train, "val": list(chunks[val_k]), "test": list(chunks[k])})
    return out


def _ratios(ratios: Sequence[float]) -> np.ndarray:
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"ratios must be non-negative with a positive sum, got {list(ratios)}")
    return ratios


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Sizes for ``n`` items by ``ratios`` (largest remainder, so they sum to ``n``)."""
    ratios = _ratios(ratios)
    exact = n * ratios / ratios.sum()
    counts = np.floor(exact).astype(int)
    # ties go to the earlier split (train before val before test)
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def fixed_split(
    keys: Sequence[str],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    strata: Sequence[Hashable] | None = None,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, list[str]]:
    """One seeded train/val/test split by ``ratios`` (normalised to sum 1).

    The split sizes come from the ratios over all keys. With strata, the shuffled strata are
    interleaved evenly before cutting, so each split holds each stratum (e.g. scans with and
    without lesions) in proportion, to within one.

    With groups (one per key, e.g. the patient), whole groups are dealt out in a seeded order,
    each to the split furthest below its share of the images (with strata: and of the group's
    strata); without strata a split ends less than one largest group above its share and less
    than two below.
    """
    if len(ratios) != len(SPLIT_NAMES):
        raise ValueError(f"ratios must give {len(SPLIT_NAMES)} values (train, val, test)")
    if groups is not None:
        bins = _deal_groups(keys, groups, ratios, seed, strata)
        return dict(zip(SPLIT_NAMES, bins, strict=True))
    counts = split_counts(len(keys), ratios)
    spread = []
    for order, members in enumerate(_shuffled_strata(keys, seed, strata)):
        n = len(members)
        spread += [((i + 0.5) / n, order, key) for i, key in enumerate(members)]
    sequence = [key for _, _, key in sorted(spread)]
    out, start = {}, 0
    for name, count in zip(SPLIT_NAMES, counts, strict=True):
        out[name] = sorted(sequence[start : start + count])
        start += count
    return out
