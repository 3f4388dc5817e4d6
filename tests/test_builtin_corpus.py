"""The built-in corpus plan (no synthesis): many speakers, >= 6 per class in dev and test."""
import numpy as np
import pytest

from speechinterp.corpus import builtin


@pytest.mark.parametrize("seed", [0, 1])
def test_small_plan_has_enough_speakers_per_class(seed):
    rows = builtin.plan("small", seed)
    assert 1900 <= len(rows) <= 2100
    split = builtin.split_speakers(rows, seed, size="small")
    counts = builtin.speakers_per_class(rows, split)
    expect = {"gender": 2, "accent": 7, "language": 11, "channel": 7}
    for prop, n_classes in expect.items():
        assert len(counts[prop]) == n_classes, prop
        for cls, by_split in counts[prop].items():
            assert by_split["dev"] >= 6 and by_split["test"] >= 6, (prop, cls, by_split)
    # accent: 24 speakers per accent, 12 / 6 / 6; gender balanced in every split
    assert {tuple(v.values()) for v in counts["accent"].values()} == {(12, 6, 6)}
    assert counts["gender"]["female"] == counts["gender"]["male"]
    # speaker-disjoint
    per_speaker = {}
    for r, s in zip(rows, split):
        per_speaker.setdefault(r["speaker"], set()).add(int(s))
    assert len(per_speaker) == 168 and all(len(v) == 1 for v in per_speaker.values())


def test_plan_and_split_are_deterministic():
    a, b = builtin.plan("small", 3), builtin.plan("small", 3)
    assert a == b
    assert np.array_equal(builtin.split_speakers(a, 3, size="small"),
                          builtin.split_speakers(b, 3, size="small"))
    c = builtin.plan("small", 4)
    assert a != c
    assert not np.array_equal(builtin.split_speakers(a, 3, size="small"),
                              builtin.split_speakers(c, 4, size="small"))


def test_speakers_vary_and_tiny_stays_tiny():
    spk = builtin.make_speakers(24, 0)
    settings = {(s.variant, s.pitch, s.pitch_range, s.rate, s.warp) for s in spk}
    assert len(settings) == len(spk) == 168
    for accent in builtin.ACCENTS:   # distinct variants within an accent and gender
        for g in ("male", "female"):
            v = [s.variant for s in spk if s.accent == accent and s.gender == g]
            assert len(set(v)) == len(v) == 12
    rows = builtin.plan("tiny", 1)
    assert len(rows) == 294
    split = builtin.split_speakers(rows, 1, size="tiny")
    assert set(split.tolist()) == {0, 1, 2}
    table = builtin.speakers_table(builtin.speakers_per_class(rows, split))
    assert table.splitlines()[0].split() == ["gender", "female", "male"]
