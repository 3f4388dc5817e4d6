"""Per-neuron probes by safeguarded Newton (speechinterp.probes.univariate).

Planted data: neuron d carries the class through a per-class mean times a separation that grows
with d (neuron 0 carries nothing). The objective is the weighted-mean cross-entropy +
l2 * ||W_d||^2, evaluated here in float64.

scikit-learn's LogisticRegression minimises ``C_sk * sum_i s_i CE_i + 0.5 * ||coef||^2`` (the
intercept unpenalised). Dividing by ``C_sk * sum_i s_i``: mean CE + ||coef||^2 / (2 C_sk n),
n = sum of the sample weights. For C > 2 classes coef is our W [C], so C_sk = 1 / (2 n l2).
For two classes sklearn fits one coefficient beta on the logit of class 1; our symmetric
optimum is W = (-beta/2, beta/2), whose penalty l2 * beta^2 / 2 matches beta^2 / (2 C_sk n)
at C_sk = 1 / (n l2).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from speechinterp.probes import elastic_net as EN
from speechinterp.probes import univariate as U

SEPS = (0.0, 0.3, 0.7, 1.5, 3.0)


def planted(C, n=600, seed=0, weights=(1.0,)):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n).astype(np.int32)
    mu = rng.normal(size=(C, len(SEPS)))
    X = rng.normal(size=(n, len(SEPS))) + np.asarray(SEPS) * mu[y]
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    split = rng.permutation(n) % 5                            # 0..2 train, 3 dev, 4 test
    w = np.where(split < 3, rng.choice(weights, n), 0.0).astype(np.float32)
    return X, y, w, split == 3


def objective64(W, b, X, y, w, l2):
    """[D] weighted-mean CE + l2 ||W_d||^2 in float64; W, b [D, C]."""
    W, b = np.asarray(W, np.float64).reshape(np.shape(b)), np.asarray(b, np.float64)
    keep = w > 0
    z = X[keep].astype(np.float64).T[:, :, None] * W[:, None] + b[:, None]     # [D, n, C]
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    ce = lse - np.take_along_axis(z, np.broadcast_to(y[keep][None, :, None], z.shape[:2] + (1,)),
                                  -1)[..., 0]
    return ce @ w[keep] / w[keep].sum() + l2 * np.sum(W * W, -1)


def sklearn_probe(x, y, s, C, l2):
    """(W [C], b [C]) of sklearn's lbfgs logistic regression on one feature, at our l2."""
    n = s.sum()
    lr = LogisticRegression(C=1.0 / ((1 if C == 2 else 2) * n * l2), tol=1e-12, max_iter=20000)
    lr.fit(x[:, None].astype(np.float64), y, sample_weight=s)
    if C == 2:
        beta, beta0 = lr.coef_[0, 0], lr.intercept_[0]
        return np.array([-beta, beta]) / 2, np.array([-beta0, beta0]) / 2
    return lr.coef_[:, 0], lr.intercept_


@pytest.mark.parametrize("C,l2,weights", [(2, 1e-3, (1.0,)), (5, 1e-3, (0.5, 1.0, 2.0)),
                                          (5, 1e-5, (1.0,)), (60, 1e-3, (1.0,))])
def test_reaches_the_sklearn_optimum(C, l2, weights):
    X, y, w, _ = planted(C, n=1500 if C == 60 else 600, weights=weights)
    P = U.fit_neurons(X, y, w, num_classes=C, l2=l2)
    assert P["W"].shape == P["b"].shape == (len(SEPS), C)
    ours = objective64(P["W"], P["b"], X, y, w, l2)
    keep = w > 0
    Wsk, bsk = zip(*[sklearn_probe(X[keep, d], y[keep], w[keep], C, l2)
                     for d in range(len(SEPS))])
    Wsk, bsk = np.stack(Wsk), np.stack(bsk)
    ref = objective64(Wsk, bsk, X, y, w, l2)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    assert np.all(ours <= ref * (1 + 1e-5) + 1e-7)
    assert np.all(ours <= np.log(C) + 1e-6)                 # never worse than the zero probe
    pred = U.predict_neurons(P, X)
    assert pred.shape == (len(SEPS), len(y))
    pred_sk = np.argmax(X.T[:, :, None] * Wsk[:, None] + bsk[:, None], -1)
    assert np.mean(pred == pred_sk) >= 0.99, np.mean(pred == pred_sk, -1)
    # the planted signal is found: the strongest neuron beats the weakest on its own rows
    acc = np.mean(pred == y, -1)
    assert acc[-1] > acc[0] + 0.05


@functools.partial(jax.jit, static_argnames=("num_classes", "num_train", "cfg"))
def adam_neurons(X, y, w, l1, l2, seed, *, num_classes, num_train, cfg):
    """protocol.fit_neurons as of commit dbd4765 (vmapped elastic_net.fit_probe, batch-plan
    key the first of split(PRNGKey(seed), 1)); protocol is being reworked concurrently."""
    key = jax.random.split(jax.random.PRNGKey(seed), 1)[0]
    fit = functools.partial(EN.fit_probe, num_classes=num_classes, num_train=num_train, cfg=cfg)
    one = jnp.ones((1,), X.dtype)
    return jax.vmap(lambda x: fit(x[:, None], y, w, one, l1, l2, key))(X.T)


def test_at_least_as_good_as_the_adam_reference():
    """Against protocol.fit_neurons (Adam, elastic net l1 = l2 = 1e-5) on the same rows: our
    objective is lower. The DEFAULT schedule (40 epochs, lr 1e-2) stops short of the optimum on
    well-separated neurons, where Newton's probes are then more accurate on dev; with a schedule
    that converges (100 epochs, lr 0.1) the dev accuracies agree within 1%."""
    try:
        from speechinterp.probes import protocol
        fit_adam = getattr(protocol, "fit_neurons", adam_neurons)
    except Exception:
        fit_adam = adam_neurons
    C, l2 = 5, 1e-5
    X, y, w, dev = planted(C, n=2400, seed=1)
    P = U.fit_neurons(X, y, w, num_classes=C, l2=l2)
    ours = objective64(P["W"], P["b"], X, y, w, l2)
    acc = np.mean(U.predict_neurons(P, X)[:, dev] == y[dev], -1)
    converged = EN.ProbeConfig(epochs=100, batch_size=256, learning_rate=0.1,
                               lr_schedule="cosine")
    for cfg in (EN.DEFAULT, converged):
        lam = np.float32(l2)
        Pa = fit_adam(jnp.asarray(X), y, w, lam, lam, 0, num_classes=C,
                      num_train=int(w.sum()), cfg=cfg)
        Pa = {"W": np.asarray(Pa["W"]).reshape(len(SEPS), C), "b": np.asarray(Pa["b"])}
        adam = objective64(Pa["W"], Pa["b"], X, y, w, l2)
        assert np.all(ours <= adam + 1e-6), ours - adam
        acc_a = np.mean(U.predict_neurons(Pa, X)[:, dev] == y[dev], -1)
        assert np.all(acc >= acc_a - 0.01), acc - acc_a
        assert np.argmax(acc) == np.argmax(acc_a) == len(SEPS) - 1
        if cfg is converged:
            np.testing.assert_allclose(acc, acc_a, atol=0.01)
        else:                                  # close where both reach the optimum
            np.testing.assert_allclose(acc[:3], acc_a[:3], atol=0.01)


def chunks_of(X, y, w, size):
    return lambda: ((X[i:i + size], y[i:i + size], w[i:i + size])
                    for i in range(0, len(y), size))


def test_rows_with_zero_weight_have_no_influence():
    C = 5
    X, y, w, _ = planted(C, seed=2)
    out = w == 0
    y2, X2 = y.copy(), X.copy()
    y2[out] = (y[out] + 1 + np.arange(out.sum())) % C
    X2[out] = 1e4                                      # even absurd features there are ignored
    P = U.fit_neurons(X, y, w, num_classes=C)
    P2 = U.fit_neurons(X2, y2, w, num_classes=C)
    for k in ("W", "b"):
        np.testing.assert_array_equal(P[k], P2[k])
    # the streamed statistics mask rather than drop the rows: same sums
    st = U.newton_stats(P, jnp.asarray(X), y, w)
    st2 = U.newton_stats(P, jnp.asarray(X2), y2, w)
    for k in st:
        np.testing.assert_allclose(st[k], st2[k], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("C", [5, 60])
def test_streamed_row_chunks_give_the_in_memory_probes(C):
    X, y, w, _ = planted(C, n=700, seed=3)
    P = U.fit_neurons(X, y, w, num_classes=C, l2=1e-3)
    Ps = U.fit_neurons_streamed(chunks_of(X, y, w, 350), num_classes=C, l2=1e-3)
    np.testing.assert_allclose(Ps["W"], P["W"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(Ps["b"], P["b"], rtol=1e-3, atol=1e-4)
    # driven by hand: the sums add over chunks and the objective never increases
    Xj = jnp.asarray(X)
    h = slice(0, 350), slice(350, 700)
    cs = U.add_stats(*[U.init_stats(Xj[r], y[r], w[r], num_classes=C) for r in h])
    state = U.init_state(cs, l2=1e-3)
    losses = [np.asarray(state["loss"])]
    for _ in range(U.default_iterations(C)):
        st = U.add_stats(*[U.newton_stats(state, Xj[r], y[r], w[r]) for r in h])
        state = U.newton_update(state, st, l2=1e-3)
        losses.append(np.asarray(state["loss"]))
    assert np.all(np.diff(np.stack(losses), axis=0) <= 0)
    np.testing.assert_allclose(state["W"], P["W"], rtol=1e-3, atol=1e-4)
    assert bool(np.all(state["done"]))
