"""speechinterp.corpus.splits: the one speaker-disjoint split every other split calls."""
from collections import Counter

import numpy as np
import pytest

from speechinterp.corpus import splits as S


def _corpus(seed=0, n_speakers=60, per_speaker=5):
    """Rows (group, stratum, balance) shaped like a corpus: each speaker one accent and gender."""
    rng = np.random.default_rng(seed)
    spk = [f"s{i:02d}" for i in range(n_speakers)]
    accent = {s: "abc"[i % 3] for i, s in enumerate(spk)}
    gender = {s: ("female", "male")[(i // 3) % 2] for i, s in enumerate(spk)}
    groups = [spk[int(i)] for i in rng.integers(n_speakers, size=n_speakers * per_speaker)]
    groups += spk                                  # every speaker has a row
    return groups, [accent[g] for g in groups], [gender[g] for g in groups]


def _per_group(groups, codes):
    out = {}
    for g, c in zip(groups, codes):
        out.setdefault(g, set()).add(int(c))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_speaker_disjoint_and_deterministic(seed):
    groups, acc, gen = _corpus(seed)
    codes = S.speaker_split(groups, acc, (0.8, 0.1, 0.1), seed)
    per = _per_group(groups, codes)
    assert all(len(v) == 1 for v in per.values())
    assert set(codes.tolist()) == {S.TRAIN, S.DEV, S.TEST}
    assert np.array_equal(codes, S.speaker_split(groups, acc, (0.8, 0.1, 0.1), seed))
    assert not np.array_equal(codes, S.speaker_split(groups, acc, (0.8, 0.1, 0.1), seed + 10))
    # the row order does not matter, only the groups and their labels
    perm = np.random.default_rng(seed).permutation(len(groups))
    shuffled = S.speaker_split([groups[i] for i in perm], [acc[i] for i in perm],
                               (0.8, 0.1, 0.1), seed)
    assert _per_group([groups[i] for i in perm], shuffled) == per
    # balanced by gender as well: still disjoint and deterministic
    bal = S.speaker_split(groups, acc, (0.5, 0.25, 0.25), seed, balance=gen)
    assert all(len(v) == 1 for v in _per_group(groups, bal).values())
    assert np.array_equal(bal, S.speaker_split(groups, acc, (0.5, 0.25, 0.25), seed,
                                               balance=gen))


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.5, 0.25, 0.25),
                                       (8, 1, 1), (0.9, 0.1, 0.0)])
def test_stratified_and_fractions_respected(fractions):
    groups, acc, gen = _corpus(0, n_speakers=90)
    codes = S.speaker_split(groups, acc, fractions, 3)
    per = {g: next(iter(v)) for g, v in _per_group(groups, codes).items()}
    accent = dict(zip(groups, acc))
    fr = np.asarray(fractions, float) / np.sum(fractions)
    for a in "abc":     # per stratum: within rounding of the fractions, every split with a share
        n = Counter(per[g] for g in per if accent[g] == a)
        total = sum(n.values())
        for s in range(3):
            assert abs(n[s] - fr[s] * total) <= 1, (a, s, n)
            assert (n[s] > 0) == (fr[s] > 0), (a, s, n)


def test_balance_evens_out_gender_per_split():
    groups, acc, gen = _corpus(1, n_speakers=48)
    codes = S.speaker_split(groups, acc, (0.5, 0.25, 0.25), 0, balance=gen)
    per = {g: next(iter(v)) for g, v in _per_group(groups, codes).items()}
    gender = dict(zip(groups, gen))
    for s in range(3):
        n = Counter(gender[g] for g in per if per[g] == s)
        assert abs(n["female"] - n["male"]) <= 1, (s, n)


def test_small_strata_still_reach_test():
    # 30 classes of 2 speakers: one of each in test, the other in train; 1 speaker stays train
    groups = [f"s{i}" for i in range(61)]
    labels = [f"L{i // 2}" for i in range(61)]
    codes = S.speaker_split(groups, labels, S.DEFAULT_FRACTIONS, 0)
    for k in range(30):
        assert sorted(codes[2 * k:2 * k + 2].tolist()) == [S.TRAIN, S.TEST]
    assert codes[60] == S.TRAIN
    assert S.stratum_counts(1, S.DEFAULT_FRACTIONS) == (1, 0, 0)
    assert S.stratum_counts(2, S.DEFAULT_FRACTIONS) == (1, 0, 1)
    assert S.stratum_counts(3, S.DEFAULT_FRACTIONS) == (1, 1, 1)
    assert S.stratum_counts(2, (0.9, 0.1, 0.0)) == (1, 1, 0)
    assert S.stratum_counts(24, (0.5, 0.25, 0.25)) == (12, 6, 6)
    assert S.stratum_counts(20, S.PROBE_FRACTIONS) == (14, 3, 3)


def test_stratified_split_is_per_row_and_rows_helper():
    labels = np.array([0] * 20 + [1] * 10 + [2] * 3)
    codes = S.stratified_split(labels, 0)
    for c in range(3):          # every class in every split
        assert set(codes[labels == c].tolist()) == {0, 1, 2}
    rows = [{"utt_id": f"u{i}", "speaker": f"p{i % 12}" if i % 7 else "",
             "accent": "xy"[i % 12 % 2]} for i in range(60)]
    out = S.split_rows(rows, seed=4, stratify="accent")
    assert "split" not in rows[0] and {r["split"] for r in out} == set(S.SPLITS)
    where = {}
    for r in out:
        if r["speaker"]:
            assert where.setdefault(r["speaker"], r["split"]) == r["split"]
    assert S.split_names([0, 2, 1]) == ["train", "test", "dev"]


def test_bad_fractions():
    for bad in [(0.8, 0.2), (0.5, -0.1, 0.6), (0, 0, 0)]:
        with pytest.raises(S.SplitError, match="fractions must be three non-negative"):
            S.speaker_split(["a", "b"], None, bad)
