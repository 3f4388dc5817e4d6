"""Concept erasure (LEACE, INLP, random control) on planted data, and affine-map masks inside a
real encoder (GE2E, resemblyzer 0.1.4's pretrained weights)."""
import importlib.util
import os
import sys

import numpy as np
import pytest

from speechinterp.analysis import erasure
from speechinterp.encoders.base import AffineMap
from speechinterp.probes.data import TEST, TRAIN

sys.path.insert(0, os.path.dirname(__file__))


def planted(n=1500, d=24, seed=0):
    """X with property A (binary) in dims 0-2 and property B (3 classes) in dims 3-5, noise
    elsewhere; a random train/dev/test split."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    b = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d))
    X[:, :3] += 1.5 * (2 * a[:, None] - 1) * np.array([1.0, 0.6, -0.8])
    X[:, 3:6] += 1.5 * np.eye(3)[b]
    X = X @ np.diag(rng.uniform(0.5, 3.0, d)) + rng.normal(0, 2, d)   # scales and offsets
    split = rng.choice(3, n, p=[0.6, 0.2, 0.2]).astype(np.int32)
    return X.astype(np.float32), a.astype(np.int32), b.astype(np.int32), split


@pytest.fixture(scope="module")
def data():
    return planted()


def _check_erased(X, a, b, split, eraser):
    ca = erasure.erasure_check(X, a, split, eraser)
    cb = erasure.erasure_check(X, b, split, eraser)
    assert ca["accuracy_before"] > 0.9, ca
    assert ca["after_covers_majority"], ca
    assert abs(ca["accuracy_after"] - ca["majority_accuracy"]) < 0.08, ca
    assert cb["accuracy_before"] > 0.75, cb
    assert abs(cb["accuracy_after"] - cb["accuracy_before"]) < 0.03, cb
    lo, hi = cb["accuracy_after_ci95"]
    assert lo > cb["majority_accuracy"], cb
    return ca, cb


def test_leace_removes_planted_property_and_keeps_the_other(data):
    X, a, b, split = data
    tr = split == TRAIN
    eraser = erasure.fit_leace(X[tr], a[tr])
    assert erasure.removed_rank(eraser) == 1            # binary concept: C - 1 directions
    _check_erased(X, a, b, split, eraser)


def test_leace_zeroes_cross_covariance_and_keeps_the_rest(data):
    X, a, b, split = data
    X = X.astype(np.float64)
    tr = split == TRAIN
    eraser = erasure.fit_leace(X[tr], b[tr])            # 3 classes: 2 directions
    assert erasure.removed_rank(eraser) == 2
    Xe = erasure.apply_eraser(X[tr], eraser).astype(np.float64)
    Z = np.eye(3)[b[tr]]
    sxz = lambda M: (M - M.mean(0)).T @ (Z - Z.mean(0)) / len(M)
    assert np.abs(sxz(X[tr])).max() > 0.3
    assert np.abs(sxz(Xe)).max() < 1e-3 * np.abs(sxz(X[tr])).max()
    # class means are equal after erasure
    means = np.stack([Xe[b[tr] == k].mean(0) for k in range(3)])
    assert np.abs(means - means.mean(0)).max() < 1e-3 * np.abs(X).max()
    # the mean is kept, and x = mu + v with v^T Sxx^-1 Sxz = 0 is unchanged (Belrose et al.)
    mu = X[tr].mean(0)
    np.testing.assert_allclose(erasure.apply_eraser(mu[None], eraser)[0], mu, atol=1e-3)
    Xc = X[tr] - mu
    g = np.linalg.solve(Xc.T @ Xc / len(Xc), sxz(X[tr]))            # [D, 3]
    v = np.random.default_rng(1).normal(size=(5, X.shape[1]))
    v -= v @ g @ np.linalg.pinv(g)                                    # v ⟂ Sxx^-1 Sxz
    out = erasure.apply_eraser(mu + v, eraser)
    np.testing.assert_allclose(out, mu + v, atol=2e-3 * np.abs(mu + v).max())
    # idempotent: erasing twice is erasing once
    np.testing.assert_allclose(erasure.apply_eraser(Xe, eraser), Xe, atol=1e-3 * np.abs(Xe).max())


def test_inlp_removes_planted_property(data):
    X, a, b, split = data
    out = erasure.fit_inlp(X, a, split, iterations=4)
    assert out["test_accuracy"][0] > 0.9
    assert out["rank"] == 4                              # one direction per iteration
    assert len(out["test_accuracy"]) == len(out["test_accuracy_ci95"]) == 4
    _check_erased(X, a, b, split, out["eraser"])


def test_random_erasure_is_a_centred_projection_of_the_rank():
    mean = np.arange(10, dtype=np.float32)
    r = erasure.random_erasure(10, 3, seed=0, mean=mean)
    assert erasure.removed_rank(r) == 3
    m = np.asarray(r.matrix, np.float64)
    np.testing.assert_allclose(m @ m, m, atol=1e-5)       # a projection
    np.testing.assert_allclose(m, m.T, atol=1e-6)         # orthogonal
    np.testing.assert_allclose(erasure.apply_eraser(mean[None], r)[0], mean, atol=1e-5)
    assert not np.allclose(erasure.random_erasure(10, 3, seed=1).matrix, r.matrix)


def test_leace_handles_fewer_rows_than_dimensions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 50)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    e = erasure.fit_leace(X, y)
    assert np.all(np.isfinite(e.matrix)) and erasure.removed_rank(e) == 1
    Xe = erasure.apply_eraser(X, e)
    for k in range(2):
        np.testing.assert_allclose(Xe[y == k].mean(0), Xe.mean(0), atol=1e-4)


def test_random_erasure_of_the_same_rank_keeps_the_property(data):
    X, a, b, split = data
    tr = split == TRAIN
    r = erasure.random_erasure(X.shape[1], 1, seed=0, mean=X[tr].mean(0))
    c = erasure.erasure_check(X, a, split, r)
    assert abs(c["accuracy_after"] - c["accuracy_before"]) < 0.03 and not c["after_covers_majority"]
