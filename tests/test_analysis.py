"""Across-property analyses: overlap, redundancy clustering, verification EER."""
import numpy as np
import pytest

from speechinterp.analysis import neurons, verification


def test_overlap_counts_and_jaccard():
    sets = {"a": {(0, 1), (0, 2), (1, 5)}, "b": {(0, 2), (1, 5), (2, 0), (2, 1)}, "c": set()}
    names, shared, jac = neurons.overlap_matrix(sets)
    assert names == ["a", "b", "c"]
    assert shared[0, 1] == 2 and shared[0, 0] == 3 and shared[2, 2] == 0
    assert jac[0, 1] == pytest.approx(2 / 5) and jac[0, 0] == 1 and jac[0, 2] == 0


def test_correlation_clusters_group_copies():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 3))
    # columns 0,1 copies of base0 (one sign-flipped), 2,3 noisy copies of base1, 4 alone, 5 const
    X = np.stack([base[:, 0], -base[:, 0], base[:, 1], base[:, 1] + 0.05 * rng.normal(size=500),
                  base[:, 2], np.ones(500)], 1)
    ids = neurons.correlation_clusters(X, threshold=0.3)
    assert ids[0] == ids[1] and ids[2] == ids[3]
    assert len({ids[0], ids[2], ids[4], ids[5]}) == 4
    r = neurons.redundancy(X, threshold=0.3)
    assert r["clusters"] == 4 and r["redundant_fraction"] == pytest.approx(2 / 6)


def test_eer_separates_speaker_layers_from_noise():
    rng = np.random.default_rng(0)
    spk = np.repeat(np.arange(20), 10)
    centers = rng.normal(size=(20, 16))
    good = centers[spk] + 0.3 * rng.normal(size=(200, 16))
    noise = rng.normal(size=(200, 16))
    test = np.ones(200, bool)
    eer_good, eer_noise = verification.layer_eers([good, noise], spk, test)
    assert eer_good < 0.05 and 0.35 < eer_noise < 0.65


def test_eer_of_perfect_and_inverted_scores():
    tgt = np.array([1, 1, 0, 0], bool)
    assert verification.equal_error_rate(np.array([0.9, 0.8, 0.1, 0.2]), tgt) == 0
    assert verification.equal_error_rate(np.array([0.1, 0.2, 0.9, 0.8]), tgt) == 1


def test_trials_need_two_speakers():
    with pytest.raises(ValueError, match="at least two speakers"):
        verification.make_trials(np.array(["a", "a", "a"]))
