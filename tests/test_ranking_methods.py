"""Data-only neuron rankings, their agreement and the vote (speechinterp.probes.ranking_methods).

The planted store: 3 classes, 60 Gaussian neurons; neurons 5, 17, 42, 50 have a class-dependent
mean. A quarter of the rows have weight 0 (not train rows).
"""
import numpy as np
import pytest

from speechinterp.probes import ranking_methods as RM

PLANTED = (5, 17, 42, 50)
NUM_CLASSES = 3


def _standardised(X, w):
    train = w > 0
    mean, std = X[train].mean(0), X[train].std(0)
    return ((X - mean) / std).astype(np.float32)


def _store(num_rows=600, num_neurons=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, num_rows)
    X = rng.normal(size=(num_rows, num_neurons))
    pattern = np.array([[2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5], [-2.0, 0, 2.0]])
    for p, neuron in zip(pattern, PLANTED):
        X[:, neuron] += p[y]
    w = (rng.random(num_rows) < 0.75).astype(np.float32)
    return _standardised(X, w), y, w


@pytest.fixture(scope="module")
def planted():
    return _store()


@pytest.fixture(scope="module")
def planted_orderings(planted):
    X, y, w = planted
    return {m: RM.ordering_from_data(m, X, y, w, NUM_CLASSES, **({"k": 10} if m == "gaussian"
                                                                   else {}))
            for m in RM.DATA_METHODS}


@pytest.mark.parametrize("method", RM.DATA_METHODS + ("voted",))
def test_planted_neurons_come_first(planted_orderings, method):
    if method == "voted":
        ordering = RM.voted_ranking(planted_orderings)
    else:
        ordering = planted_orderings[method]
    assert sorted(ordering) == list(range(60))
    assert set(ordering[:len(PLANTED)].tolist()) == set(PLANTED)


def test_probeless_matches_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 7)).astype(np.float32)
    y = rng.integers(0, 5, 80)
    w = np.ones(80, np.float32)
    y[y == 3] = 4                                   # a class without rows is left out
    means = [X[y == c].mean(0) for c in range(5) if (y == c).any()]
    brute = sum(np.abs(a - b) for i, a in enumerate(means) for b in means[i + 1:])
    np.testing.assert_allclose(RM.probeless_scores(X, y, w, 5), brute, rtol=1e-5)


def test_iou_matches_brute_force():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    X[:, 1] += 3 * (rng.integers(0, 3, 120) == 0)
    y = rng.integers(0, 4, 120)
    w = np.ones(120, np.float32)
    brute = []
    for j in range(6):
        active = set(np.flatnonzero(X[:, j] > np.quantile(X[:, j], 0.9)))
        brute.append(max(len(active & set(np.flatnonzero(y == c)))
                         / len(active | set(np.flatnonzero(y == c))) for c in range(4)))
    np.testing.assert_allclose(RM.iou_scores(X, y, w, 4, quantile=0.9), brute, rtol=1e-6)


def test_rows_with_zero_weight_affect_no_score(planted):
    X, y, w = planted
    garbage = X.copy()
    out = w == 0
    garbage[out] = 1e3 * np.random.default_rng(3).normal(size=(out.sum(), X.shape[1]))
    y_garbage = np.where(out, 7, y)                 # even out-of-range labels are ignored
    for X2, y2 in ((garbage, y_garbage), (X[~out], y[~out])):
        w2 = w if len(X2) == len(X) else w[~out]
        np.testing.assert_array_equal(RM.probeless_scores(X2, y2, w2, NUM_CLASSES),
                                      RM.probeless_scores(X, y, w, NUM_CLASSES))
        np.testing.assert_array_equal(RM.iou_scores(X2, y2, w2, NUM_CLASSES),
                                      RM.iou_scores(X, y, w, NUM_CLASSES))
        np.testing.assert_allclose(RM.gaussian_gains(X2, y2, w2, NUM_CLASSES, [5, 17]),
                                   RM.gaussian_gains(X, y, w, NUM_CLASSES, [5, 17]),
                                   rtol=1e-5, atol=1e-6)


def test_a_bad_label_is_named():
    X = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="1 weighted rows have a label outside 0..2.*row 2"):
        RM.probeless_scores(X, np.array([0, 1, 5, 2]), np.ones(4), 3)
    with pytest.raises(ValueError, match="needs a trained probe"):
        RM.ordering_from_data("weight_mass", X, np.zeros(4, int), np.ones(4), 3)


def _lda_loglik(X, y, w, selected, ridge=1e-3):
    """Mean train label log-likelihood of a shared-covariance Gaussian refitted on ``selected``."""
    train = w > 0
    Xs, ys = X[train][:, selected].astype(np.float64), y[train]
    classes = np.unique(ys)
    means = np.stack([Xs[ys == c].mean(0) for c in classes])
    priors = np.array([(ys == c).mean() for c in classes])
    centred = Xs - means[np.searchsorted(classes, ys)]
    S = centred.T @ centred / len(Xs) + ridge * np.eye(len(selected))
    P = np.linalg.inv(S)
    logits = Xs @ P @ means.T - 0.5 * np.einsum("cd,de,ce->c", means, P, means) + np.log(priors)
    logits -= logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return logp[np.arange(len(ys)), np.searchsorted(classes, ys)].mean()


def test_gaussian_gains_equal_a_refit(planted):
    X, y, w = planted
    selected = [42, 3]
    gains = RM.gaussian_gains(X, y, w, NUM_CLASSES, selected)
    assert np.all(np.isneginf(gains[selected]))
    base = _lda_loglik(X, y, w, selected)
    for j in (5, 11, 50):
        np.testing.assert_allclose(gains[j], _lda_loglik(X, y, w, selected + [j]) - base,
                                   rtol=2e-3, atol=2e-5)


def test_gaussian_first_pick_is_the_best_single_neuron(planted):
    X, y, w = planted
    selected, after, single = RM.gaussian_greedy(X, y, w, NUM_CLASSES, k=3)
    assert selected[0] == int(np.argmax(single))
    for j in (0, 17):
        np.testing.assert_allclose(single[j], _lda_loglik(X, y, w, [j])
                                   - _lda_loglik(X, y, w, []), rtol=2e-3, atol=2e-5)
    assert np.all(np.diff(after) > 0)               # train log-likelihood grows


def test_gaussian_accuracy_criterion_and_held_out_rows(planted):
    X, y, w = planted
    # on held-out rows the fourth planted neuron adds little once three separate the classes
    for criterion in ("loglik", "accuracy"):
        ordering = RM.gaussian_ordering(X, y, w, NUM_CLASSES, k=3, w_eval=1 - w,
                                        criterion=criterion)
        assert set(ordering[:3].tolist()) <= set(PLANTED)
        assert sorted(ordering) == list(range(60))


def test_method_agreement():
    a = np.random.default_rng(4).permutation(200)
    out = RM.method_agreement({"x": a, "same": a.copy(), "reversed": a[::-1]})
    pairs = {(p["a"], p["b"]): p for p in out["pairs"]}
    same, rev = pairs[("x", "same")], pairs[("x", "reversed")]
    assert same["top1_overlap"] == same["top5_overlap"] == 1.0 and same["spearman"] == 1.0
    assert rev["spearman"] == pytest.approx(-1.0) and rev["top5_overlap"] == 0.0
    assert out["chance"] == {"top1_overlap": 2 / 200, "top5_overlap": 10 / 200, "spearman": 0.0}
    # the chance figure is what random orderings score on average
    rng = np.random.default_rng(5)
    mean5 = np.mean([RM.method_agreement({"p": rng.permutation(200), "q": rng.permutation(200)}
                                         )["pairs"][0]["top5_overlap"] for _ in range(400)])
    assert mean5 == pytest.approx(0.05, abs=0.01)
    with pytest.raises(ValueError, match="short has 3 neurons, not 200"):
        RM.method_agreement({"x": a, "short": np.arange(3)})


def test_voted_ranking_is_the_borda_count():
    orderings = [np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), np.array([2, 1, 0, 3])]
    # mean ranks: 0 -> 1, 1 -> 2/3, 2 -> 5/3, 3 -> 8/3
    np.testing.assert_array_equal(RM.voted_ranking(orderings), [1, 0, 2, 3])
    # a tie goes to the lower index
    np.testing.assert_array_equal(RM.voted_ranking([np.array([0, 1]), np.array([1, 0])]), [0, 1])
