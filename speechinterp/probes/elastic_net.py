"""Elastic-net multinomial logistic regression probes: pure, jitted and vmappable.

Loss (NeuroX ``linear_probe``; Dalvi et al. 2019, Durrani et al. 2020):

    CE(X W + b, y) + l1 * ||W||_1 + l2 * ||W||_2

with the penalties on the weights only. ``||W||_2`` is NeuroX's un-squared Frobenius norm by
default (``squared_l2=False``); ``squared_l2=True`` gives the usual ridge term ``||W||_2^2``.

A probe is the pytree ``{"W": [D, C], "b": [C]}``. :func:`fit_probe` trains one probe on
``X [N, D]`` with per-row weights ``w`` (0 excludes a row: other splits, missing labels,
batch padding) and a ``feature_mask [D]`` (0 drops a column: padding of narrow layers to the
widest one, neuron subsets). It is a pure function, so ``jax.vmap`` over any argument trains
many probes in one call: layers (X, mask), subsets (mask), control tasks (y), seeds (key),
and the regularisation grid (l1, l2).

:func:`fit_bands_planned` trains many probes at once with the same updates: probes on column
sets of one X (layers, the oracle on all layers, nested subsets) are cut into :class:`Bands`,
column ranges shared by the probes that read them, so one row gather per step serves every probe
and each band is one matrix product for all of its probes. :mod:`~.engine` drives it (batch
plans, devices, streaming) and is the one place that trains.
"""
from __future__ import annotations

import dataclasses
import math
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Optimisation settings of a probe.

    ``lambdas`` is the (l1, l2) grid searched on dev; every grid point is trained in the same
    vmapped call.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"      # "constant" | "cosine"
    squared_l2: bool = False
    lambdas: tuple[tuple[float, float], ...] = ((1e-5, 1e-5),)
    init: str = "zeros"                # "zeros" | "uniform" (torch nn.Linear's default)
    shuffle: bool = True               # reshuffle the training rows every epoch


# NeuroX's own settings: Adam, lr 1e-3, mini-batches of 32, 10 epochs, l1 = l2 = 1e-5,
# un-squared L2, no grid search; weights start at zero and the rows are reshuffled every epoch.
NEUROX = ProbeConfig()

# NeuroX's algorithm exactly: as NEUROX, but like NeuroX's torch ``nn.Linear`` probe the
# weights and bias start at U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the rows are fed in their
# order in every epoch (NeuroX's ``batch_generator`` does not shuffle). On a store sorted by
# speaker each epoch then ends on the same few speakers, which is why NEUROX reshuffles.
NEUROX_EXACT = ProbeConfig(init="uniform", shuffle=False)

# A well-converged default: larger batches, more epochs with a cosine-decayed, larger learning
# rate, and l1 = l2 chosen on dev from a small grid.
DEFAULT = ProbeConfig(epochs=40, batch_size=256, learning_rate=1e-2, lr_schedule="cosine",
                      lambdas=((1e-5, 1e-5), (1e-4, 1e-4), (1e-3, 1e-3), (1e-2, 1e-2)))

CONFIGS = {"neurox": NEUROX, "neurox_exact": NEUROX_EXACT, "default": DEFAULT}


def setting_name(cfg: ProbeConfig) -> str:
    """The name of ``cfg`` in :data:`CONFIGS` (``custom`` for any other settings), recorded in
    results.json as ``probe_setting``."""
    return next((name for name, c in CONFIGS.items() if c == cfg), "custom")


def _uniform_draws(key, w_shape, b_shape, dtype):
    """U(-1, 1) draws for W and b, with XLA's RngBitGenerator ("rbg"; threefry would double
    the compile time of a training call)."""
    rbg = jax.random.wrap_key_data(jnp.tile(jax.random.key_data(key).reshape(-1)[:2], 2),
                                   impl="rbg")
    kw, kb = jax.random.split(rbg)
    return (jax.random.uniform(kw, w_shape, dtype, -1.0, 1.0),
            jax.random.uniform(kb, b_shape, dtype, -1.0, 1.0))


def init_probe(num_features: int, num_classes: int, dtype=jnp.float32, *, init: str = "zeros",
               key=None, feature_mask=None) -> dict:
    """Initial probe {"W": [D, C], "b": [C]}: zeros, or ``init="uniform"`` (torch
    ``nn.Linear``, fan-in = the unmasked features; masked weights start at 0)."""
    if init == "zeros":
        return {"W": jnp.zeros((num_features, num_classes), dtype),
                "b": jnp.zeros((num_classes,), dtype)}
    if init != "uniform":
        raise ValueError(f"unknown init {init!r}; use zeros or uniform")
    m = jnp.ones((num_features,), dtype) if feature_mask is None else feature_mask
    W, b = _uniform_draws(key, (num_features, num_classes), (num_classes,), dtype)
    bound = 1.0 / jnp.sqrt(jnp.maximum(m.sum(), 1.0))   # torch nn.Linear: 1/sqrt(fan_in)
    return {"W": W * bound * m[:, None], "b": b * bound}


def init_key(key):
    """The key of the initial weights of probes trained with batch-plan key ``key``."""
    return jax.random.fold_in(key, 1)


def probe_logits(params: dict, X: jax.Array, feature_mask: jax.Array | None = None) -> jax.Array:
    W = params["W"] if feature_mask is None else params["W"] * feature_mask[:, None]
    return X @ W + params["b"]


def _l1_norm(W: jax.Array, axis=None) -> jax.Array:
    """sum |W| whose gradient is sign(W), 0 at W = 0 (torch's ``norm(p=1)``, which NeuroX uses;
    ``jnp.abs`` has gradient 1 at 0, which would push zero weights off zero)."""
    return jnp.sum(W * jax.lax.stop_gradient(jnp.sign(W)), axis=axis)


def elastic_net_penalty(W: jax.Array, l1, l2, squared_l2: bool = False) -> jax.Array:
    l2_term = jnp.sum(W * W) if squared_l2 else jnp.sqrt(jnp.sum(W * W) + 1e-12)
    return l1 * _l1_norm(W) + l2 * l2_term


def elastic_net_loss(params, X, y, w, feature_mask, l1, l2, squared_l2: bool = False):
    """Weighted mean cross-entropy + elastic-net penalty on the (masked) weights."""
    W = params["W"] * feature_mask[:, None]
    logits = X @ W + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    ce = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1.0)
    return ce + elastic_net_penalty(W, l1, l2, squared_l2)


def optimizer(cfg: ProbeConfig, steps_per_epoch: int):
    if cfg.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, cfg.epochs * steps_per_epoch, 0.02)
    elif cfg.lr_schedule == "constant":
        lr = cfg.learning_rate
    else:
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}")
    return optax.adam(lr)


def _batch_plan(key, w: jax.Array, num_batches: int, batch_size: int, shuffle: bool = True):
    """Row indices [num_batches, batch_size] over the rows with w > 0 (shuffled, or in row
    order), padded with w=0.

    Rows with zero weight are sorted to the end so batches hold (almost) only training rows.
    """
    n = w.shape[0]
    noise = jax.random.uniform(key, (n,)) if shuffle else jnp.zeros((n,))
    order = jnp.argsort(jnp.where(w > 0, noise, 2.0 + noise), stable=True)
    total = num_batches * batch_size
    idx = jnp.concatenate([order, jnp.zeros((max(total - n, 0),), order.dtype)])[:total]
    valid = jnp.concatenate([jnp.ones((n,)), jnp.zeros((max(total - n, 0),))])[:total]
    return idx.reshape(num_batches, batch_size), valid.reshape(num_batches, batch_size)


def batch_shape(num_train: int, cfg: ProbeConfig) -> tuple[int, int]:
    """(batch size, steps per epoch) for ``num_train`` training rows: the one place this is
    computed (``batch_size`` 0 means full-batch)."""
    bs = min(cfg.batch_size, num_train) if cfg.batch_size else num_train
    return bs, max(1, math.ceil(num_train / bs))


def _plan(key, w, num_train: int, cfg: ProbeConfig):
    """Every epoch's shuffled batch plan up front: (idx, valid) [epochs * batches, batch],
    and the number of batches per epoch (``num_train`` rows with w > 0, static)."""
    bs, nb = batch_shape(num_train, cfg)
    idx, valid = jax.vmap(lambda k: _batch_plan(k, w, nb, bs, cfg.shuffle))(
        jax.random.split(key, cfg.epochs))
    return idx.reshape(-1, bs), valid.reshape(-1, bs), nb


def fit_probe(X, y, w, feature_mask, l1, l2, key, *, num_classes: int, num_train: int,
              cfg: ProbeConfig = DEFAULT, init_params: dict | None = None):
    """Train one probe with Adam on mini-batches; pure and jittable (``num_train`` static).

    ``num_train`` (the number of rows with w > 0) fixes the number of batches per epoch.
    ``init_params`` replaces the initial probe ``cfg.init`` draws. This is the single-probe
    reference; :func:`~.engine.train` trains many at once with the same updates.
    """
    idx, valid, nb = _plan(key, w, num_train, cfg)
    opt = optimizer(cfg, nb)
    params = init_params if init_params is not None else init_probe(
        X.shape[1], num_classes, X.dtype, init=cfg.init, key=init_key(key),
        feature_mask=feature_mask)

    def step(carry, inputs):
        params, state = carry
        i, v = inputs
        g = jax.grad(elastic_net_loss)(params, X[i], y[i], w[i] * v, feature_mask, l1, l2,
                                       cfg.squared_l2)
        updates, state = opt.update(g, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (idx, valid))
    return params


# ----------------------------------------------------------------------------- probe bands
@dataclasses.dataclass(frozen=True)
class Bands:
    """P probes on columns of one X [N, K], trained together (see :func:`fit_bands_planned`).

    Probe p reads a set of columns of X; band b is a rectangle, the columns
    ``[start_b, start_b + width_b)`` times a set of heads, and head h of band b holds probe
    ``p``'s weights on those columns. A probe's logits are the sum of its heads' products, so
    a probe may span several bands and each band is one matrix product shared by all of its
    heads (the layer probes and the oracle, or nested subsets of one ordering).

    * ``label`` [P]: the row of Y each probe predicts; ``l1``, ``l2`` [P]: its penalties;
    * ``masks``: per band, None or [S_b, H_b, width_b] (0 where a head's probe does not read
      the column: the band is wider than that probe);
    * ``layout`` (static): per band ``(start, width, stack, runs)``: the band is ``stack``
      equal-width column ranges side by side from ``start`` (equal-width layers: one batched
      product instead of one per layer, which compiles faster), and ``runs`` is a tuple of
      ``(head_lo, head_hi, probe_lo, stride)``: head h of range s is probe
      ``probe_lo + s * stride + h - head_lo``; stride 0 sums the ranges into one probe (the
      oracle's weights on each layer).

    Parameters are ``{"W": (W_b [S_b, H_b, C, width_b], ...), "b": [P, C]}``.
    """

    label: jax.Array
    l1: jax.Array
    l2: jax.Array
    masks: tuple
    layout: tuple

    @property
    def num_probes(self) -> int:
        return self.label.shape[0]


jax.tree_util.register_dataclass(Bands, data_fields=["label", "l1", "l2", "masks"],
                                 meta_fields=["layout"])


def _runs(heads: np.ndarray) -> tuple:
    """Ascending probe indices of a band's heads -> (head_lo, head_hi, probe_lo, 0) runs."""
    cuts = np.flatnonzero(np.diff(heads) != 1) + 1
    los = np.concatenate([[0], cuts])
    his = np.concatenate([cuts, [len(heads)]])
    return tuple((int(a), int(b), int(heads[a]), 0) for a, b in zip(los, his))


def _stack(layout: list, masks: list) -> tuple[list, list]:
    """Merge runs of adjacent, unmasked, equal-width bands whose heads map alike (each run of
    heads either the same probes in every band, or the next probes) into stacked bands."""
    out_l, out_m = [], []
    for (start, width, _, runs), m in zip(layout, masks):
        if out_l and m is None and out_m[-1] is None:
            s0, w0, S, runs0 = out_l[-1]
            hp = _head_probes(runs, 1, _num_heads(runs))[0]
            if w0 == width and s0 + S * w0 == start and len(hp) == _num_heads(runs0):
                merged = []
                for a, b, p0, st in runs0:
                    steps = (st,) if S > 1 else (0, b - a)
                    ok = [k for k in steps
                          if np.array_equal(hp[a:b], p0 + S * k + np.arange(b - a))]
                    if not ok:
                        break
                    merged.append((a, b, p0, ok[0]))
                else:
                    out_l[-1] = (s0, w0, S + 1, tuple(merged))
                    continue
        out_l.append((start, width, 1, runs))
        out_m.append(m)
    return out_l, out_m


def interval_bands(lo, hi, label, l1, l2, band_cost: float = 3000.0) -> Bands:
    """Bands for probes on column intervals ``[lo[p], hi[p])`` of X.

    The band boundaries are chosen among the interval ends by dynamic programming, minimising
    the weights trained (band width x heads, padding included) plus ``band_cost`` per band
    (each band is a few more operations per step, and more to compile). Probes that share
    columns share a band; nested intervals come out as a staircase of bands whose head counts
    fall off, so padding stays small. Order the probes so that the probes of a band are few
    runs of consecutive indices (see :class:`Bands`)."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    if np.any(hi <= lo):
        raise ValueError("every probe needs at least one column")
    pts = np.unique(np.concatenate([lo, hi]))
    n = len(pts)
    # heads[i, j]: probes meeting [pts[i], pts[j])
    meets = (lo[None, None, :] < pts[None, :, None]) & (hi[None, None, :] > pts[:, None, None])
    heads = meets.sum(-1)
    cost = (pts[None, :] - pts[:, None]) * heads + np.where(heads > 0, band_cost, 0.0)
    best, arg = np.full(n, np.inf), np.zeros(n, np.int64)
    best[0] = 0.0
    for j in range(1, n):
        c = best[:j] + cost[:j, j]
        arg[j] = int(np.argmin(c))
        best[j] = c[arg[j]]
    masks, layout, j = [], [], n - 1
    while j > 0:
        i = arg[j]
        a, b = int(pts[i]), int(pts[j])
        hs = np.flatnonzero(meets[i, j])
        if len(hs):
            cols = np.arange(a, b)
            m = ((cols[None] >= lo[hs, None]) & (cols[None] < hi[hs, None])).astype(np.float32)
            masks.append(None if m.all() else m[None])
            layout.append((a, b - a, 1, _runs(hs)))
        j = i
    layout, masks = _stack(layout[::-1], masks[::-1])
    return Bands(label=np.asarray(label, np.int32), l1=np.asarray(l1, np.float32),
                 l2=np.asarray(l2, np.float32), masks=tuple(masks), layout=tuple(layout))


def _to_probes(per_head, runs, num_probes: int):
    """Per-head values [S, H, ...] -> per-probe sums [P, ...] (static runs: pads and adds)."""
    out = 0
    for h0, h1, p0, stride in runs:
        seg = per_head[:, h0:h1]
        seg = seg.sum(0) if stride == 0 else seg.reshape((-1,) + seg.shape[2:])
        pad = [(p0, num_probes - p0 - seg.shape[0])] + [(0, 0)] * (seg.ndim - 1)
        out = out + jnp.pad(seg, pad)
    return out


def band_logits(params, X, bands: Bands):
    """Logits [P, C, N] of every probe on X [N, K].

    Weights are held as [S, H, C, width] and X's rows as columns of the product, so the forward
    and the gradient products read and write the weights in place (no per-step transposes of
    the weights; the batch of X is transposed instead)."""
    P = bands.num_probes
    out = params["b"][:, :, None]
    for W, (start, width, S, runs) in zip(params["W"], bands.layout):
        Xs = jax.lax.slice_in_dim(X, start, start + S * width, axis=1)
        if S == 1:
            part = jnp.einsum("hcj,nj->hcn", W[0], Xs)[None]
        else:
            part = jnp.einsum("shcj,nsj->shcn", W, Xs.reshape(X.shape[0], S, width))
        out = out + _to_probes(part, runs, P)
    return out


def _bands_loss(params, bands: Bands, Xb, Yb, wb, squared_l2: bool):
    """Sum over probes of :func:`elastic_net_loss` (masked weights are 0)."""
    P = bands.num_probes
    logits = band_logits(params, Xb, bands)                          # [P, C, B]
    onehot = jax.nn.one_hot(Yb[bands.label], logits.shape[1], axis=1, dtype=logits.dtype)
    ce = jax.nn.logsumexp(logits, axis=1) - jnp.sum(logits * onehot, axis=1)   # [P, B]
    ce = ce @ wb / jnp.maximum(jnp.sum(wb), 1.0)
    sq, ab = 0.0, 0.0
    for W, (_, _, _, runs) in zip(params["W"], bands.layout):
        sq = sq + _to_probes(jnp.sum(W * W, axis=(2, 3)), runs, P)
        ab = ab + _to_probes(_l1_norm(W, axis=(2, 3)), runs, P)
    l2_term = sq if squared_l2 else jnp.sqrt(sq + 1e-12)
    return jnp.sum(ce + bands.l1 * ab + bands.l2 * l2_term)


def probe_fan_in(bands: Bands) -> np.ndarray:
    """Columns each probe reads [P] (host)."""
    fan = np.zeros(bands.num_probes)
    for m, (_, width, S, runs) in zip(bands.masks, bands.layout):
        H = _num_heads(runs)
        per_head = np.full((S, H), float(width)) if m is None else np.asarray(m).sum(-1)
        fan += np.bincount(_head_probes(runs, S, H).ravel(), per_head.ravel(),
                           minlength=bands.num_probes)
    return fan


def _num_heads(runs) -> int:
    return max(h1 for _, h1, _, _ in runs)


def init_bands(bands: Bands, num_classes: int, dtype=np.float32, *, init: str = "zeros",
               rng: np.random.Generator | None = None) -> dict:
    """Initial parameters (host numpy): zeros, or ``init="uniform"`` as :func:`init_probe`
    (torch ``nn.Linear``: U(+-1/sqrt(fan_in)), fan-in = the columns the probe reads; masked
    weights start at 0) drawn from ``rng``."""
    if init not in ("zeros", "uniform"):
        raise ValueError(f"unknown init {init!r}; use zeros or uniform")
    P, C = bands.num_probes, num_classes
    shapes = [(S, _num_heads(runs), C, width) for _, width, S, runs in bands.layout]
    if init == "zeros":
        return {"W": tuple(np.zeros(s, dtype) for s in shapes), "b": np.zeros((P, C), dtype)}
    bound = 1.0 / np.sqrt(np.maximum(probe_fan_in(bands), 1.0))
    Ws = []
    for s, m, (_, _, _, runs) in zip(shapes, bands.masks, bands.layout):
        hb = _head_probes(runs, s[0], s[1])                           # [S, H] probe indices
        W = rng.uniform(-1.0, 1.0, s) * bound[hb][:, :, None, None]
        Ws.append((W if m is None else W * np.asarray(m)[:, :, None, :]).astype(dtype))
    return {"W": tuple(Ws), "b": (rng.uniform(-1.0, 1.0, (P, C)) * bound[:, None]).astype(dtype)}


def _head_probes(runs, S: int, H: int) -> np.ndarray:
    """The probe of every head [S, H] of a band."""
    out = np.full((S, H), -1, np.int64)
    for h0, h1, p0, stride in runs:
        out[:, h0:h1] = p0 + stride * np.arange(S)[:, None] + np.arange(h1 - h0)[None]
    return out


def probe_weights(params, bands: Bands, probe: int, num_features: int) -> np.ndarray:
    """Probe ``probe``'s weights as one [K, C] matrix on X's columns (host)."""
    C = np.shape(params["b"])[1]
    out = np.zeros((num_features, C), np.float32)
    for W, (start, width, S, runs) in zip(params["W"], bands.layout):
        hp = _head_probes(runs, S, _num_heads(runs))
        for s, h in zip(*np.nonzero(hp == probe)):
            out[start + s * width:start + (s + 1) * width] += np.asarray(W[s, h]).T
    return out


def batch_plan(key, w, *, num_train: int, cfg: ProbeConfig = DEFAULT):
    """The shuffled mini-batches :func:`fit_probe` and the engine use with this key:
    (idx, valid) [epochs * steps_per_epoch, batch] and steps_per_epoch."""
    return _plan(key, w, num_train, cfg)


def fit_bands_planned(X, Y, w, bands: Bands, idx, valid, params0, *, num_classes: int,
                      steps_per_epoch: int, cfg: ProbeConfig = DEFAULT) -> dict:
    """Train every probe of ``bands`` in one scan over the batch plan ``idx``, ``valid``
    [steps, batch] (from :func:`batch_plan`) from ``params0`` (:func:`init_bands`); pure and
    jittable. X [N, K], Y [T, N] int labels, w [N] row weights. All probes see the same
    mini-batches (one row gather per step), and each one gets exactly :func:`fit_probe`'s
    updates with the same key and initial weights: the loss is a sum of independent per-probe
    losses."""
    del num_classes   # the shapes of params0 carry it
    opt = optimizer(cfg, steps_per_epoch)

    def step(carry, inputs):
        i, v = inputs
        return bands_update(*carry, bands, X[i], Y[:, i], w[i] * v, opt, cfg.squared_l2), None

    (params, _), _ = jax.lax.scan(step, (params0, opt.init(params0)), (idx, valid))
    return params


def bands_update(params, state, bands: Bands, Xb, Yb, wb, opt, squared_l2: bool):
    """One optimiser step of every probe of ``bands`` on the mini-batch Xb [B, K], Yb [T, B],
    row weights wb [B] -> (params, state)."""
    g = jax.grad(_bands_loss)(params, bands, Xb, Yb, wb, squared_l2)
    # masked weights start at 0 and get no gradient (the penalties' gradients vanish at 0),
    # so they stay 0 and the forward pass needs no mask
    g = {"W": tuple(gw if m is None else gw * m[:, :, None, :]
                    for gw, m in zip(g["W"], bands.masks)), "b": g["b"]}
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state


def predict_bands(X, bands: Bands, params) -> jax.Array:
    """Classes [P, N] of every probe on X [N, K]."""
    return jnp.argmax(band_logits(params, X, bands), axis=1)


def predict(params, X, feature_mask=None) -> jax.Array:
    return jnp.argmax(probe_logits(params, X, feature_mask), axis=-1)
