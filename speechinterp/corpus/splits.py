"""Speaker-disjoint train / dev / test splits: the one algorithm every split in the library uses.

:func:`speaker_split` deals whole groups (speakers) to train / dev / test:

1. each group gets its *stratum*: the most common ``strata`` label over its rows (on a tie, the
   one seen first); groups are sorted and the strata are visited in sorted order;
2. within a stratum the groups are shuffled with ``np.random.default_rng(seed)``; with
   ``balance`` (e.g. gender) each balance class is shuffled on its own and the classes are
   interleaved, the leading class rotating from one stratum to the next (one draw before the
   first stratum picks where the rotation starts), so every split gets about equal numbers;
3. a stratum of ``n`` groups gives ``round(n * dev)`` groups to dev and ``round(n * test)`` to
   test (Python's round), at least one to every split with a non-zero share when ``n`` is at least
   the number of such splits, and train always keeps one group when it has a share: so a stratum
   of 2 groups puts one in train and one in test (small classes still reach test), a stratum of
   1 group stays in train;
4. the shuffled groups go to test first, then dev, then train.

The same groups, labels and seed give the same split; no group is in two splits.

Defaults: :data:`DEFAULT_FRACTIONS` (80 / 10 / 10% of the speakers) for the corpus importers and
``train_encoder``; a probe's own split of a store without a split column (and the recorded
corpus) passes :data:`PROBE_FRACTIONS` (70 / 15 / 15%); the built-in synthetic corpus passes its
size preset's fractions (50 / 25 / 25%, balanced by gender). Helpers: :func:`split_rows` for
manifest rows (dicts), :func:`stratified_split` for a per-utterance split (every row its own
group), :func:`stratum_counts` for the counts of one stratum.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

SPLITS = ("train", "dev", "test")
TRAIN, DEV, TEST = 0, 1, 2
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)    # corpus importers, train_encoder
PROBE_FRACTIONS = (0.7, 0.15, 0.15)    # a probe's own split, the recorded corpus
MIN_SPEAKERS = 3    # a class needs this many (test) speakers, else it is confounded with speaker


class SplitError(ValueError):
    """Fractions that are not three non-negative numbers with a positive sum."""


def check_fractions(fractions) -> np.ndarray:
    """``fractions`` (train, dev, test) normalised to sum to 1; :class:`SplitError` if invalid."""
    fr = np.asarray(fractions, float)
    if fr.shape != (3,) or np.any(fr < 0) or not fr.sum() > 0:
        raise SplitError(f"fractions must be three non-negative numbers (train, dev, test), "
                         f"got {tuple(np.atleast_1d(fractions).tolist())}")
    return fr if fr.sum() == 1 else fr / fr.sum()


def stratum_counts(n: int, fractions) -> tuple[int, int, int]:
    """(train, dev, test) groups for a stratum of ``n`` groups (rule 3 of the module doc)."""
    fr = check_fractions(fractions)
    k = [0] + [int(round(n * f)) if f > 0 else 0 for f in fr[1:]]
    for s in (DEV, TEST):   # at least one per split with a share; trimmed below when n is small
        if fr[s] > 0 and n > 0:
            k[s] = max(k[s], 1)
    keep_train = 1 if fr[TRAIN] > 0 and n > 0 else 0
    while k[DEV] + k[TEST] > n - keep_train:   # dev gives way first: test matters more
        k[DEV if k[DEV] >= k[TEST] else TEST] -= 1
    return n - k[DEV] - k[TEST], k[DEV], k[TEST]


def _main_label(groups: Sequence[Hashable], labels: Sequence | None) -> dict:
    """{group: its most common label (the first seen on a tie)}."""
    counts: dict = {}
    for g, lab in zip(groups, labels if labels is not None else [""] * len(groups)):
        c = counts.setdefault(g, {})
        c[lab] = c.get(lab, 0) + 1
    return {g: max(c.items(), key=lambda kv: kv[1])[0] for g, c in counts.items()}


def speaker_split(groups: Sequence[Hashable], strata: Sequence | None = None,
                  fractions=DEFAULT_FRACTIONS, seed: int | Sequence[int] = 0,
                  balance: Sequence | None = None) -> np.ndarray:
    """Split code (0 train, 1 dev, 2 test) per row; rows of one group share a split.

    ``groups``: the group (speaker) of each row; ``strata``: a label per row to stratify by (or
    None: one stratum); ``balance``: a label per row to balance within each stratum (or None);
    ``fractions``: train / dev / test shares of the groups (normalised); ``seed``: an int or a
    sequence of ints for ``np.random.default_rng``. See the module doc for the algorithm."""
    fr = check_fractions(fractions)
    groups = list(groups.tolist() if isinstance(groups, np.ndarray) else groups)
    for name, labels in (("strata", strata), ("balance", balance)):
        if labels is not None and len(labels) != len(groups):
            raise SplitError(f"{len(groups)} groups but {len(labels)} {name} labels")
    main = _main_label(groups, None if strata is None else list(strata))
    bal = _main_label(groups, None if balance is None else list(balance))
    by_stratum: dict = {}
    for g in sorted(main):
        by_stratum.setdefault(main[g], []).append(g)
    rng = np.random.default_rng(seed)
    classes = sorted(set(bal.values()))
    lead = int(rng.integers(len(classes))) if balance is not None else 0
    assign = {}
    for k, lab in enumerate(sorted(by_stratum)):
        gs = by_stratum[lab]
        if balance is None:
            order = [gs[i] for i in rng.permutation(len(gs))]
        else:
            per = {c: [g for g in gs if bal[g] == c] for c in classes}
            per = {c: [v[i] for i in rng.permutation(len(v))] for c, v in per.items()}
            start = (k + lead + 1) % len(classes)
            turn = classes[start:] + classes[:start]
            order = [per[c][j] for j in range(max(len(v) for v in per.values()))
                     for c in turn if j < len(per[c])]
        _, n_dev, n_test = stratum_counts(len(order), fr)
        for i, g in enumerate(order):
            assign[g] = TEST if i < n_test else DEV if i < n_test + n_dev else TRAIN
    return np.array([assign[g] for g in groups], np.int32)


def stratified_split(labels: Sequence, seed: int | Sequence[int] = 0,
                     fractions=PROBE_FRACTIONS) -> np.ndarray:
    """Split code per row, every row its own group, stratified by ``labels`` (a per-utterance
    split, e.g. for speaker identity, whose classes must be in every split)."""
    return speaker_split(range(len(labels)), labels, fractions, seed)


def split_rows(rows: Sequence[dict], fractions=DEFAULT_FRACTIONS, seed: int = 0,
               stratify: str | Sequence[str] | None = None, balance: str | None = None,
               speaker: str = "speaker") -> list[dict]:
    """Copies of manifest ``rows`` with ``split`` set by :func:`speaker_split`: grouped by the
    ``speaker`` column (a row with an empty one is its own group), stratified by the ``stratify``
    column (or a tuple of columns, e.g. language and gender), balanced by the ``balance`` column.
    The input is not modified."""
    group = [r.get(speaker) or f"\0{r['utt_id']}" for r in rows]
    keys = [stratify] if isinstance(stratify, str) else list(stratify or ())
    strata = ["\t".join(r.get(k) or "" for k in keys) for r in rows] if keys else None
    bal = [r.get(balance) or "" for r in rows] if balance else None
    codes = speaker_split(group, strata, fractions, seed, bal)
    return [{**r, "split": SPLITS[int(c)]} for r, c in zip(rows, codes)]


def split_names(codes: Sequence[int]) -> list[str]:
    """``["train", "dev", "test"]`` names of split codes."""
    return [SPLITS[int(c)] for c in codes]
