"""Linear concept erasure: LEACE, INLP, a random-subspace control, and a check that it worked.

Every eraser is an affine map on row vectors, ``x' = x @ matrix + bias``
(:class:`~speechinterp.encoders.base.AffineMap`), the object an encoder also takes as a mask
entry, so an eraser fitted on a store's utterance vectors can be applied inside the forward pass
(amnesic probing, :mod:`speechinterp.analysis.amnesic`). Mean pooling is linear, so erasing the
frames of a layer and then pooling gives the erasure of the pooled vector.

Arrays: ``X`` [N, D] rows (utterance vectors of one layer), ``y`` [N] integer classes,
``split`` [N] with :data:`~speechinterp.probes.data.TRAIN` / ``DEV`` / ``TEST``, ``groups`` [N]
the speaker of each row (clustered intervals, :mod:`speechinterp.bootstrap`) or None.
Probes are the project's elastic-net probes, every layer and lambda in one call of the probe
engine (:func:`~speechinterp.probes.engine.fit`), the lambda chosen on dev, accuracy reported
on test.
"""
from __future__ import annotations

import numpy as np

from speechinterp.bootstrap import ci_list, cluster_bootstrap_ci
from speechinterp.encoders.base import AffineMap
from speechinterp.probes.data import DEV, TEST, TRAIN
from speechinterp.probes.elastic_net import DEFAULT, ProbeConfig
from speechinterp.probes.engine import ProbeSpecs
from speechinterp.probes.engine import fit as engine_fit


def apply_eraser(X: np.ndarray, eraser: AffineMap) -> np.ndarray:
    """``X @ matrix + bias`` in float32 (numpy, for stored vectors)."""
    return (np.asarray(X, np.float32) @ np.asarray(eraser.matrix, np.float32)
            + np.asarray(eraser.bias, np.float32))


def removed_rank(eraser: AffineMap, tol: float = 1e-4) -> int:
    """Rank of ``I - matrix``: the number of directions the eraser removes."""
    m = np.asarray(eraser.matrix, np.float64)
    return int(np.linalg.matrix_rank(np.eye(len(m)) - m, tol=tol))


def _one_hot(y, num_classes: int | None) -> np.ndarray:
    y = np.asarray(y, np.int64)
    c = int(y.max()) + 1 if num_classes is None else num_classes
    return np.eye(c)[y]


def fit_leace(X: np.ndarray, y: np.ndarray, num_classes: int | None = None,
              tol: float = 1e-8) -> AffineMap:
    """LEACE, least-squares concept erasure (Belrose et al., NeurIPS 2023, "LEACE: Perfect
    linear concept erasure in closed form", Theorem 4.3), fitted on the rows given (the training
    rows).

    With Z the one-hot labels, mu the mean of X, Sxx = Cov(X), Sxz = Cov(X, Z):

        r(x) = x - W^+ P W (x - mu),  W = (Sxx^{1/2})^+ (whitening),
        P = orthogonal projection onto the column space of W Sxz.

    The erased data have Cov(r(X), Z) = 0, so no linear classifier does better than a constant
    (the paper's Theorem 3.1), and among all such affine erasers r moves x least in mean
    squared (Mahalanobis) distance. A direction v with v^T Sxx^+ Sxz = 0 is left unchanged.
    Pseudo-inverses handle rank-deficient Sxx (fewer rows than dimensions; eigenvalues below
    ``tol`` times the largest count as zero).

    Returns the :class:`AffineMap` with ``matrix = I - M^T`` and ``bias = mu @ M^T``,
    ``M = W^+ P W``, so that ``r(x) = x @ matrix + bias`` for row vectors x. It removes
    rank(Sxz) <= C - 1 directions.
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    Z = _one_hot(y, num_classes)
    mu = X.mean(0)
    Xc = X - mu
    sxx = Xc.T @ Xc / n
    sxz = Xc.T @ (Z - Z.mean(0)) / n
    lam, V = np.linalg.eigh(sxx)
    keep = lam > tol * max(lam.max(), np.finfo(float).tiny)
    Vk, lk = V[:, keep], lam[keep]
    W = (Vk / np.sqrt(lk)) @ Vk.T
    W_pinv = (Vk * np.sqrt(lk)) @ Vk.T
    U, s, _ = np.linalg.svd(W @ sxz, full_matrices=False)
    U = U[:, s > tol * max(s.max(initial=0.0), np.finfo(float).tiny)]
    M = W_pinv @ U @ U.T @ W
    return AffineMap((np.eye(d) - M.T).astype(np.float32), (mu @ M.T).astype(np.float32))


def random_erasure(dim: int, rank: int, seed: int = 0, mean: np.ndarray | None = None
                   ) -> AffineMap:
    """The control of an eraser: the orthogonal projection removing a random ``rank``-dim
    subspace (Gaussian, orthonormalised). With ``mean`` the projection is centred there,
    ``x -> x - (x - mean) Q Q^T``, so the mean is kept, as LEACE keeps it."""
    rng = np.random.default_rng([seed, 7321])
    Q, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    proj = Q @ Q.T
    bias = np.zeros(dim) if mean is None else np.asarray(mean, np.float64) @ proj
    return AffineMap((np.eye(dim) - proj).astype(np.float32), bias.astype(np.float32))


# ----------------------------------------------------------------------------- probes
def probe_layers(layers: list[np.ndarray], y: np.ndarray, split: np.ndarray, *,
                 num_classes: int | None = None, cfg: ProbeConfig = DEFAULT,
                 seed: int = 0) -> dict:
    """One elastic-net probe per layer (X [N, D_k] each; same rows), trained on the train rows
    with every lambda of ``cfg.lambdas`` in one call of the probe engine
    (:func:`~speechinterp.probes.engine.fit`), the lambda chosen per layer on dev. Columns are
    standardised with train statistics (as the probing protocol).

    Returns ``pred_test`` [L, N_test] classes on the test rows, ``dev_accuracy`` [L],
    ``W`` [L, D_max, C] and ``b`` [L, C], the chosen probes' weights on the *unstandardised*
    inputs (logits = X @ W + b)."""
    y = np.asarray(y, np.int32)
    split = np.asarray(split)
    c = int(y.max()) + 1 if num_classes is None else num_classes
    order = np.argsort(split != TRAIN, kind="stable")             # the engine: train rows first
    train = split[order] == TRAIN
    ntr = int(train.sum())
    mus, sds, std = [], [], []
    for X in layers:
        X = np.asarray(X, np.float32)[order]
        mu, sd = X[train].mean(0), X[train].std(0)
        sd = np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
        mus.append(mu)
        sds.append(sd)
        std.append((X - mu) / sd)
    dims = [a.shape[1] for a in std]
    offs = np.cumsum([0] + dims)
    G, L = len(cfg.lambdas), len(layers)
    l1 = np.array([a for a, _ in cfg.lambdas], np.float32)
    l2 = np.array([b for _, b in cfg.lambdas], np.float32)
    specs = ProbeSpecs(np.repeat(offs[:-1], G), np.repeat(offs[1:], G), np.zeros(L * G),
                       np.tile(l1, L), np.tile(l2, L))
    trained = engine_fit(np.concatenate(std, axis=1), y[order][None], specs, num_train=ntr,
                         num_classes=c, cfg=cfg, seed=seed)
    ev = split[order][ntr:]
    y_ev = y[order][ntr:]
    pred = trained.predictions[0].reshape(L, G, -1)                 # [L, G, N_eval]
    dev_acc = (pred[:, :, ev == DEV] == y_ev[ev == DEV]).mean(-1)   # [L, G]
    best = dev_acc.argmax(-1)
    dmax = max(dims)
    W_in = np.zeros((L, dmax, c), np.float32)
    b_in = np.zeros((L, c), np.float32)
    for k in range(L):                                             # undo the standardisation
        Wk, bk = trained.weights(k * G + int(best[k]))
        Wk = Wk[offs[k]:offs[k + 1]]
        W_in[k, :dims[k]] = Wk / sds[k][:, None]
        b_in[k] = bk - mus[k] / sds[k] @ Wk
    # test rows in their original order (the engine keeps each split in row order)
    return {"pred_test": pred[np.arange(L), best][:, ev == TEST],
            "dev_accuracy": dev_acc[np.arange(L), best], "W": W_in, "b": b_in}


def accuracy_with_interval(pred_test: np.ndarray, y_test: np.ndarray, groups_test=None,
                           seed: int = 0) -> list[dict]:
    """``[{"accuracy", "accuracy_ci95"}]`` per row of ``pred_test`` [L, N_test]; the 95%
    interval resamples test speakers when ``groups_test`` is given (the same resamples for every
    row: paired)."""
    correct = (np.asarray(pred_test) == np.asarray(y_test)[None]).astype(np.float64)
    ci = cluster_bootstrap_ci(correct, groups_test, seed=seed)
    return [{"accuracy": float(c.mean()), "accuracy_ci95": ci_list(i)}
            for c, i in zip(correct, ci)]


def majority_baseline(y: np.ndarray, split: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent training class."""
    y, split = np.asarray(y), np.asarray(split)
    return float(np.mean(y[split == TEST] == np.bincount(y[split == TRAIN]).argmax()))


def _covers(ci, value: float) -> bool:
    lo, hi = ci
    return lo is not None and hi is not None and lo <= value <= hi


# ----------------------------------------------------------------------------- INLP
def _orthonormal_columns(A: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """An orthonormal basis [D, r] of the column space of A."""
    if A.shape[1] == 0:
        return A
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    return U[:, s > tol * max(s.max(initial=0.0), np.finfo(float).tiny)]


def fit_inlp(X: np.ndarray, y: np.ndarray, split: np.ndarray, *, iterations: int = 10,
             num_classes: int | None = None, cfg: ProbeConfig = DEFAULT, seed: int = 0,
             groups=None) -> dict:
    """INLP, iterative nullspace projection (Ravfogel et al., ACL 2020, "Null It Out").

    In the space of X standardised with train statistics, repeat ``iterations`` times: train a
    linear probe for y on the projected rows (train split; lambda chosen on dev), add the span
    of its weight directions (the class columns less their mean: C - 1 directions) to the
    removed subspace, and project onto the orthogonal complement (the nullspace) of every
    direction removed so far. In raw coordinates the final projection P is the affine map
    ``matrix = S^-1 P S`` (S = diag of train standard deviations), ``bias = mu - mu @ matrix``.

    Returns ``{"eraser": AffineMap, "rank": removed directions, "dev_accuracy": [...],
    "test_accuracy": [...], "test_accuracy_ci95": [...]}``, per iteration the probe trained on
    the data as projected before that iteration (entry 0 is the unerased accuracy).
    """
    X = np.asarray(X, np.float64)
    split = np.asarray(split)
    train = split == TRAIN
    mu, sd = X[train].mean(0), X[train].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    Xs = (X - mu) / sd
    d = X.shape[1]
    Q = np.zeros((d, 0))
    P = np.eye(d)
    dev, test = [], []
    g_test = None if groups is None else np.asarray(groups)[split == TEST]
    y_test = np.asarray(y)[split == TEST]
    for _ in range(iterations):
        fit = probe_layers([(Xs @ P).astype(np.float32)], y, split, num_classes=num_classes,
                           cfg=cfg, seed=seed)
        dev.append(float(fit["dev_accuracy"][0]))
        test.append(accuracy_with_interval(fit["pred_test"], y_test, g_test, seed)[0])
        W = fit["W"][0]
        Q = _orthonormal_columns(np.concatenate([Q, P @ (W - W.mean(1, keepdims=True))], 1))
        P = np.eye(d) - Q @ Q.T
    matrix = (P * sd[None, :]) / sd[:, None]
    return {"eraser": AffineMap(matrix.astype(np.float32), (mu - mu @ matrix).astype(np.float32)),
            "rank": int(Q.shape[1]), "dev_accuracy": dev,
            "test_accuracy": [t["accuracy"] for t in test],
            "test_accuracy_ci95": [t["accuracy_ci95"] for t in test]}


# ----------------------------------------------------------------------------- the check
def erasure_check(X: np.ndarray, y: np.ndarray, split: np.ndarray, eraser: AffineMap, *,
                  groups=None, num_classes: int | None = None, cfg: ProbeConfig = DEFAULT,
                  seed: int = 0) -> dict:
    """Did ``eraser`` remove y's linear information from X? Fresh probes for y on the original
    and on the erased rows (trained on train, lambda chosen on dev, both in one call); test
    accuracy with 95% intervals (speaker-clustered with ``groups``) and the majority baseline.

    Returns ``{"accuracy_before", "accuracy_before_ci95", "accuracy_after",
    "accuracy_after_ci95", "majority_accuracy", "after_covers_majority", "num_test"}``;
    ``after_covers_majority`` is whether the erased interval contains the majority baseline.
    """
    split = np.asarray(split)
    fit = probe_layers([np.asarray(X, np.float32), apply_eraser(X, eraser)], y, split,
                       num_classes=num_classes, cfg=cfg, seed=seed)
    g_test = None if groups is None else np.asarray(groups)[split == TEST]
    before, after = accuracy_with_interval(fit["pred_test"], np.asarray(y)[split == TEST],
                                           g_test, seed)
    maj = majority_baseline(y, split)
    return {"accuracy_before": before["accuracy"],
            "accuracy_before_ci95": before["accuracy_ci95"],
            "accuracy_after": after["accuracy"], "accuracy_after_ci95": after["accuracy_ci95"],
            "majority_accuracy": maj,
            "after_covers_majority": _covers(after["accuracy_ci95"], maj),
            "num_test": int(np.sum(split == TEST))}
