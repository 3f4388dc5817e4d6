"""Per-neuron (univariate) probes solved by Newton's method instead of trained by Adam.

For every column ``x`` of ``X [N, D]`` (already standardised) this fits a multinomial logistic
regression on that one feature plus a bias, rows weighted by ``w`` (0 excludes a row: dev/test
rows, missing labels):

    obj_d(W_d, b_d) = sum_i w_i CE(x_id W_d + b_d, y_i) / sum_i w_i  +  l2 * ||W_d||_2^2

with ``W_d, b_d`` in R^C (the bias is not penalised). This is a ridge (squared) penalty. The Adam
reference (:func:`~.protocol.fit_neurons` = vmapped :func:`~.elastic_net.fit_probe`) minimises
the elastic net ``l1 * ||W_d||_1 + l2 * ||W_d||_2`` (un-squared by default) instead. Here the
probe has a single feature, so an l1 term selects nothing (it would only shrink the C weights of
that one feature a little, as the ridge does) and is left out; the objective stays smooth, which
Newton's method needs. With the small lambdas used (1e-5 .. 1e-2) both are close to plain
maximum likelihood, and the probes' predictions agree (tests/test_univariate.py).

Method: iteratively reweighted least squares, i.e. Newton's method on the multinomial logistic
log-likelihood (Bishop, PRML 2006, sec. 4.3.3 and 4.3.4), for all neurons at once (jitted,
vectorised over neurons), warm-started from the closed form of Gaussian discriminant analysis
with a shared variance (1-D LDA; PRML sec. 4.2.2, Hastie et al., ESL sec. 4.3), whose
posterior is exactly a softmax with W_c = mu_c / s^2, b_c = log pi_c - mu_c^2 / (2 s^2).

* C <= :data:`FULL_MAX_CLASSES`: the exact Newton step on the 2C parameters of each neuron. The
  Hessian is singular along the common shift of the biases (softmax is invariant to it) and
  nearly so along the common shift of the weights (only the ridge sees it). The gradient is
  orthogonal to both (the weights are kept centred over classes), so adding their projectors to
  the Hessian makes it invertible without changing the Newton step.
* larger C: a 2x2 Newton block per class, the diagonal blocks of the Hessian (block-Jacobi:
  the coupling ``-p_c p_c'`` between classes is left out), with O(C) memory per neuron instead
  of O(C^2); it converges linearly (~15-20 passes where the exact step needs ~4), which the
  safeguard below keeps monotone.

Both are safeguarded: a step is accepted only if the objective does not increase, otherwise it
is halved (backtracking along the same direction), so the returned probe's objective never
exceeds that of the all-zero probe (log C) or of the warm start. A neuron stops when its Newton
decrement ``g^T H^-1 g`` falls below ``tol`` (it is then frozen, so when it stops does not
depend on the other neurons it is solved with).

Streaming: every per-iteration quantity is a sum over rows, so the solver is driven by

    cs = init_stats(X, y, w, num_classes)            # summed over row chunks (add_stats)
    state = init_state(cs, l2=l2)
    for _ in range(iterations):
        st = newton_stats(state, X, y, w)            # summed over row chunks (add_stats)
        state = newton_update(state, st, l2=l2)
    params = {"W": state["W"], "b": state["b"]}

:func:`fit_neurons_streamed` does exactly this for an iterable of row chunks;
:func:`fit_neurons` runs the same steps in memory, a block of neurons at a time.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

FULL_MAX_CLASSES = 32        # exact 2C x 2C Newton step up to here, per-class 2x2 blocks above
DEFAULT_L2 = 1e-5
DEFAULT_TOL = 1e-6
_BUDGET = 1 << 22            # floats of one [neurons, rows, classes] temporary in a block
_CACHE = 1 << 18             # floats of one [neurons, row chunk, classes] temporary, C > 32
_MIN_STEP = 1.0 / 1024       # a neuron whose step was halved below this stops


def default_iterations(num_classes: int) -> int:
    """Newton passes (the most; neurons stop earlier at ``tol``): quadratic convergence for the
    exact step, a linear rate for the block-diagonal one."""
    return 12 if num_classes <= FULL_MAX_CLASSES else 20


def _block_size(rows: int, num_classes: int, width: int, full: bool | None = None) -> int:
    """Neurons per block so that one [block, rows, classes] temporary holds ~_BUDGET floats
    (3x for the exact step's outer products)."""
    full = num_classes <= FULL_MAX_CLASSES if full is None else full
    per = max(rows, 1) * num_classes * (3 if full else 1)
    return int(max(1, min(width, _BUDGET // per, 1024)))


def add_stats(a: dict, b: dict) -> dict:
    """Sum of the statistics of two row chunks (of :func:`init_stats` or :func:`newton_stats`)."""
    return jax.tree_util.tree_map(jnp.add, a, b)


# ----------------------------------------------------------------------------- row sums
def _rows(xT, y, w, num_classes):
    """Masked inputs: x [B, N] with excluded rows zeroed, weights, one-hot labels * (w > 0)."""
    keep = w > 0
    w = jnp.where(keep, w, 0.0).astype(xT.dtype)
    xT = jnp.where(keep[None], xT, 0.0)
    Y = jax.nn.one_hot(y, num_classes, dtype=xT.dtype) * keep[:, None]
    return xT, w, Y


def _init_block(xT, y, w, num_classes):
    xT, w, Y = _rows(xT, y, w, num_classes)
    wx = xT * w
    return {"n": jnp.broadcast_to(w.sum(), xT.shape[:1]),
            "Y": jnp.stack([wx @ Y, jnp.broadcast_to(w @ Y, (xT.shape[0], num_classes))], -1),
            "q": jnp.sum(wx * xT, -1)}


def _stats_rows(W, b, xT, y, w):
    """Row sums at (W, b) [B, C] over x [B, N]: n, loss = sum w CE [B], A = sum w p {x^2, x, 1}
    [B, C, 3], Y = sum w y {x, 1} [B, C, 2], and for the exact step P = sum w p_c p_c'
    {x^2, x, 1} [B, 3C, C] (A is then its row sums: sum_c' p_c' = 1), else Q = sum w p^2
    {x^2, x, 1} [B, C, 3] (the diagonal of P: A - Q are the diagonal blocks of the Hessian)."""
    B, C = W.shape
    xT, w, Y = _rows(xT, y, w, C)
    z = xT[:, :, None] * W[:, None, :] + b[:, None, :]                  # [B, N, C]
    m = jnp.max(z, -1, keepdims=True)
    e = jnp.exp(z - m)
    s = jnp.sum(e, -1, keepdims=True)
    p = e / s
    lse = (m + jnp.log(s))[..., 0]                                      # [B, N]
    Ys = jnp.stack([(xT * w) @ Y, jnp.broadcast_to(w @ Y, (B, C))], -1)
    yi = jnp.clip(y, 0, C - 1)
    zy = xT * jnp.take(W, yi, axis=1) + jnp.take(b, yi, axis=1)        # [B, N] true-class logit
    loss = (lse - zy) @ w                      # per-row CE first: no cancellation between sums
    phi = jnp.stack([xT * xT * w, xT * w, jnp.broadcast_to(w, xT.shape)], -1)   # [B, N, 3]
    out = {"n": jnp.broadcast_to(w.sum(), (B,)), "loss": loss, "Y": Ys}
    if C <= FULL_MAX_CLASSES:
        q = (phi[:, :, :, None] * p[:, :, None, :]).reshape(B, -1, 3 * C)
        out["P"] = jnp.einsum("bnk,bnc->bkc", q, p)
        out["A"] = jnp.swapaxes(out["P"].sum(-1).reshape(B, 3, C), 1, 2)
    else:
        AQ = jnp.einsum("bnc,bnk->bck", jnp.concatenate([p, p * p], -1), phi)
        out["A"], out["Q"] = AQ[:, :C], AQ[:, C:]
    return out


def _stats_block(W, b, xT, y, w):
    """:func:`_stats_rows`; for C > FULL_MAX_CLASSES summed over row chunks (lax.scan) whose
    [B, rows, C] temporaries stay in cache (~4x faster for C ~ 1,000)."""
    B, C = W.shape
    N = xT.shape[1]
    R = max(64, _CACHE // (B * C))
    if C <= FULL_MAX_CLASSES or R >= N:
        return _stats_rows(W, b, xT, y, w)
    k = -(-N // R)
    pad = k * R - N
    xs = jnp.pad(xT, ((0, 0), (0, pad))).reshape(B, k, R).transpose(1, 0, 2)
    ys, ws = jnp.pad(y, (0, pad)).reshape(k, R), jnp.pad(w, (0, pad)).reshape(k, R)
    zero = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                  jax.eval_shape(_stats_rows, W, b, xs[0], ys[0], ws[0]))
    return jax.lax.scan(lambda acc, a: (add_stats(acc, _stats_rows(W, b, *a)), None), zero,
                        (xs, ys, ws))[0]


def _blocked(fn, xT, *per_neuron, block):
    """``fn`` over column blocks of xT [D, N] (and per-neuron arrays [D, ...]) with lax.map;
    outputs concatenated back to [D, ...]."""
    Dn = xT.shape[0]
    nb = -(-Dn // block)
    pad = nb * block - Dn

    def split(a):
        a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape((nb, block) + a.shape[1:])
    out = jax.lax.map(lambda args: fn(*args), (split(xT),) + tuple(split(a) for a in per_neuron))
    return jax.tree_util.tree_map(lambda a: a.reshape((nb * block,) + a.shape[2:])[:Dn], out)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def init_stats(X, y, w, *, num_classes: int) -> dict:
    """Sums over the rows of a chunk X [N, D], y [N], w [N] for the warm start: n = sum w, Y =
    sum w y_c {x, 1} [D, C, 2], q = sum w x^2 [D]. Chunks add (:func:`add_stats`)."""
    xT = X.T
    block = _block_size(X.shape[0], 1, xT.shape[0])
    return _blocked(lambda xb: _init_block(xb, y, w, num_classes), xT, block=block)


@jax.jit
def newton_stats(params, X, y, w) -> dict:
    """Sums over the rows of a chunk X [N, D] at the probes ``params`` (or the state of
    :func:`newton_update`: its candidate ``W_try, b_try``): n, loss = sum w CE [D], A [D, C, 3],
    Y [D, C, 2], and P [D, 3C, C] for C <= FULL_MAX_CLASSES, else Q [D, C, 3] (see
    :func:`_stats_rows`).
    Chunks add (:func:`add_stats`)."""
    W, b = params.get("W_try", params["W"]), params.get("b_try", params["b"])
    xT = X.T
    block = _block_size(X.shape[0], W.shape[-1], xT.shape[0])
    return _blocked(lambda xb, Wb, bb: _stats_block(Wb, bb, xb, y, w), xT, W, b, block=block)


# ----------------------------------------------------------------------------- updates
def _centre(a):
    return a - jnp.mean(a, -1, keepdims=True)


def _lda(cs):
    """Gaussian discriminant analysis with a shared variance, per neuron: W [D, C], b [D, C]."""
    n = jnp.maximum(cs["n"], 1e-12)[:, None]
    nc, sc = cs["Y"][..., 1], cs["Y"][..., 0]
    mu = sc / jnp.maximum(nc, 1e-12)
    var = (cs["q"] - jnp.sum(sc * mu, -1)) / n[:, 0]
    var = jnp.maximum(var, 1e-3 * cs["q"] / n[:, 0] + 1e-6)[:, None]
    prior = jnp.maximum(nc, 1e-2) / n
    W = mu / var
    b = jnp.log(prior) - mu * mu / (2 * var)
    return _centre(W), _centre(b)


@jax.jit
def init_state(cs: dict, *, l2=DEFAULT_L2) -> dict:
    """Solver state from :func:`init_stats`: the accepted probe is the all-zero one (objective
    log C exactly), the first candidate the 1-D LDA solution. ``W, b`` are always the best
    probe so far, ``W_try, b_try`` the next to evaluate."""
    Wl, bl = _lda(cs)
    Dn, C = Wl.shape
    zeros = jnp.zeros_like(Wl)
    return {"W": zeros, "b": zeros, "loss": jnp.full((Dn,), math.log(C), Wl.dtype),
            "dW": Wl, "db": bl, "W_try": Wl, "b_try": bl, "t": jnp.ones((Dn,), Wl.dtype),
            "decrement": jnp.full((Dn,), jnp.inf, Wl.dtype), "done": jnp.zeros((Dn,), bool)}


def _block_direction(A, Q, gW, gb, l2):
    """Per-class 2x2 Newton blocks: the diagonal blocks A - Q of the Hessian (mean scale),
    i.e. the class coupling - p_c p_c' (c != c') of the softmax is left out."""
    H = A - Q
    hxx = H[..., 0] * (1 + 1e-6) + 2 * l2 + 1e-12
    hx1 = H[..., 1]
    h11 = H[..., 2] * (1 + 1e-6) + 1e-12
    det = hxx * h11 - hx1 * hx1
    return -(h11 * gW - hx1 * gb) / det, -(hxx * gb - hx1 * gW) / det


def _direction(W, stats, l2):
    """Newton direction (dW, db) [D, C] and decrement g^T H^-1 g [D] at W from the stats."""
    n = jnp.maximum(stats["n"], 1e-12)[:, None]
    A, Y = stats["A"] / n[..., None], stats["Y"] / n[..., None]
    gW = A[..., 1] - Y[..., 0] + 2 * l2 * W
    gb = A[..., 2] - Y[..., 1]
    Dn, C = W.shape
    if C <= FULL_MAX_CLASSES:
        P = stats["P"].reshape(Dn, 3, C, C) / n[..., None, None]
        Q = jnp.moveaxis(jnp.diagonal(P, axis1=-2, axis2=-1), 1, -1)
    else:
        Q = stats["Q"] / n[..., None]
    dW, db = _block_direction(A, Q, gW, gb, l2)
    if C <= FULL_MAX_CLASSES:
        # H = [[Hxx, Hx1], [Hx1, H11]], H_k = diag(A_k) - P_k, + ridge on the W block, +
        # projectors on the common shifts of W and of b (the gradient is orthogonal to both)
        eye = jnp.eye(C, dtype=W.dtype)
        Hk = jnp.moveaxis(A, -1, 1)[..., None] * eye - P + jnp.full((C, C), 1.0 / C, W.dtype)
        Hk = Hk + jnp.stack([2 * l2 * eye, jnp.full((C, C), -1.0 / C, W.dtype),
                             jnp.zeros((C, C), W.dtype)])
        H = jnp.concatenate([jnp.concatenate([Hk[:, 0], Hk[:, 1]], -1),
                             jnp.concatenate([Hk[:, 1], Hk[:, 2]], -1)], -2)
        # Levenberg jitter for float32 Cholesky; a failed factorisation falls back to the
        # block-diagonal step
        H = H + (1e-5 * jnp.diagonal(H, axis1=-2, axis2=-1) + 1e-10)[..., None] * jnp.eye(2 * C)
        g = jnp.concatenate([gW, gb], -1)
        step = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(H, lower=True),
                                           g[..., None])[..., 0]
        good = jnp.all(jnp.isfinite(step), -1, keepdims=True)
        dW = jnp.where(good, step[..., :C], dW)
        db = jnp.where(good, step[..., C:], db)
    dec = -jnp.sum(gW * dW + gb * db, -1)
    ok = jnp.all(jnp.isfinite(dW), -1) & jnp.all(jnp.isfinite(db), -1) & jnp.isfinite(dec)
    dW, db = jnp.where(ok[:, None], dW, 0.0), jnp.where(ok[:, None], db, 0.0)
    return dW, db, jnp.where(ok, dec, 0.0)


@jax.jit
def newton_update(state: dict, stats: dict, *, l2=DEFAULT_L2, tol=DEFAULT_TOL) -> dict:
    """One safeguarded Newton step from the stats (summed over all rows) at the candidate.

    The candidate is accepted if its objective is <= the best so far; then the next candidate
    is the Newton step from it (exact 2C x 2C, or per-class 2x2 blocks for C >
    FULL_MAX_CLASSES). Otherwise the step from the best probe is halved. ``state`` may be plain
    probes ``{"W", "b"}`` (then those are evaluated and accepted, a Newton step taken).
    Neurons whose decrement is <= ``tol`` (or whose step fell below 1/1024) are ``done`` and
    no longer change."""
    W0 = state.get("W_try", state["W"])
    b0 = state.get("b_try", state["b"])
    Dn, C = W0.shape
    n = jnp.maximum(stats["n"], 1e-12)
    obj = stats["loss"] / n + l2 * jnp.sum(W0 * W0, -1)
    best = state.get("loss", jnp.full((Dn,), jnp.inf, W0.dtype))
    done = state.get("done", jnp.zeros((Dn,), bool))
    accept = (obj <= best) & ~done
    dW, db, dec = _direction(W0, stats, l2)
    t_old = state.get("t", jnp.ones((Dn,), W0.dtype))
    t = jnp.where(accept, 1.0, jnp.where(done, t_old, t_old * 0.5))
    a = accept[:, None]
    W = jnp.where(a, W0, state["W"])
    b = jnp.where(a, b0, state["b"])
    dW = jnp.where(a, dW, state.get("dW", dW))
    db = jnp.where(a, db, state.get("db", db))
    decrement = jnp.where(accept, dec, state.get("decrement", dec))
    new_done = done | (accept & (dec <= tol)) | (t < _MIN_STEP)
    return {"W": W, "b": b, "loss": jnp.where(accept, obj, best), "dW": dW, "db": db,
            "W_try": _centre(W + t[:, None] * dW), "b_try": _centre(b + t[:, None] * db),
            "t": t, "decrement": decrement, "done": new_done}


def objective(params: dict, X, y, w, *, l2=DEFAULT_L2) -> np.ndarray:
    """The objective [D] of probes ``{"W": [D, C], "b": [D, C]}`` (W may be [D, 1, C], as
    :func:`~.protocol.fit_neurons` returns) on X [N, D]."""
    W = jnp.asarray(params["W"]).reshape(np.shape(params["b"]))
    st = newton_stats({"W": W, "b": jnp.asarray(params["b"])}, X, y, w)
    return np.asarray(st["loss"] / jnp.maximum(st["n"], 1e-12) + l2 * jnp.sum(W * W, -1))


# ----------------------------------------------------------------------------- drivers
@functools.partial(jax.jit, static_argnames=("num_classes", "block"))
def _fit_blocks(X, y, w, l2, tol, iterations, *, num_classes, block):
    def one(xb):                                            # xb [B, N]
        st = init_state(_init_block(xb, y, w, num_classes), l2=l2)

        def cond(c):
            i, s = c
            return (i < iterations) & ~jnp.all(s["done"])

        def body(c):
            i, s = c
            stats = _stats_block(s["W_try"], s["b_try"], xb, y, w)
            return i + 1, newton_update(s, stats, l2=l2, tol=tol)
        _, st = jax.lax.while_loop(cond, body, (0, st))
        return {"W": st["W"], "b": st["b"]}
    return _blocked(one, X.T, block=block)


def fit_neurons(X, y, w, *, num_classes: int, l2: float = DEFAULT_L2,
                iterations: int | None = None, tol: float = DEFAULT_TOL) -> dict:
    """One univariate probe per column of X [N, D] -> ``{"W": [D, C], "b": [D, C]}``.

    Minimises, per neuron, the weighted-mean cross-entropy + ``l2 * ||W_d||^2`` (module
    docstring) by at most ``iterations`` safeguarded Newton passes (default
    :func:`default_iterations`) from the 1-D LDA warm start. Rows with ``w == 0`` are dropped
    first (they have no influence). X may be a numpy or jax array; neurons are solved in blocks
    so that the [neurons, rows, classes] temporaries stay ~16 MB."""
    w = np.asarray(w)
    keep = np.flatnonzero(w > 0)
    X = jnp.asarray(np.asarray(X)[keep] if isinstance(X, np.ndarray) else jnp.asarray(X)[keep])
    y = jnp.asarray(np.asarray(y)[keep], jnp.int32)
    wk = jnp.asarray(w[keep], X.dtype)
    iterations = default_iterations(num_classes) if iterations is None else int(iterations)
    block = _block_size(X.shape[0], num_classes, X.shape[1])
    return _fit_blocks(X, y, wk, jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype),
                       jnp.asarray(iterations, jnp.int32), num_classes=num_classes, block=block)


def fit_neurons_streamed(chunks: Callable[[], Iterable], *, num_classes: int,
                         l2: float = DEFAULT_L2, iterations: int | None = None,
                         tol: float = DEFAULT_TOL) -> dict:
    """:func:`fit_neurons` over row chunks: ``chunks()`` returns a fresh iterable of
    ``(X [n, D], y [n], w [n])`` and is called once per pass (1 + up to ``iterations``)."""
    iterations = default_iterations(num_classes) if iterations is None else int(iterations)

    def total(fn):
        acc = None
        for Xc, yc, wc in chunks():
            s = fn(jnp.asarray(Xc), jnp.asarray(yc, jnp.int32), jnp.asarray(wc, jnp.float32))
            acc = s if acc is None else add_stats(acc, s)
        return acc
    state = init_state(total(lambda X, y, w: init_stats(X, y, w, num_classes=num_classes)),
                       l2=l2)
    for _ in range(iterations):
        if bool(jnp.all(state["done"])):
            break
        state = newton_update(state, total(lambda X, y, w: newton_stats(state, X, y, w)),
                              l2=l2, tol=tol)
    return {"W": state["W"], "b": state["b"]}


@functools.partial(jax.jit, static_argnames=("block",))
def _predict(W, b, X, *, block):
    def one(xb, Wb, bb):                                    # [B, N], [B, C]
        return jnp.argmax(xb[:, :, None] * Wb[:, None] + bb[:, None], -1).astype(jnp.int32)
    return _blocked(one, X.T, W, b, block=block)


def predict_neurons(params: dict, X) -> np.ndarray:
    """Classes [D, N] of the univariate probes ``{"W": [D, C], "b": [D, C]}`` (W [D, 1, C]
    also accepted) on the columns of X [N, D], a block of neurons at a time."""
    b = jnp.asarray(params["b"])
    W = jnp.asarray(params["W"]).reshape(b.shape)
    X = jnp.asarray(X)
    block = _block_size(X.shape[0], b.shape[-1], X.shape[1], full=False)
    return np.asarray(_predict(W, b, X, block=block))
