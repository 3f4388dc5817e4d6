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

:func:`fit_blocks` trains many families of probes at once with the same updates: each
:class:`Block` is a set of probes on column sets of one X (layers, nested subsets), all of them
on the same shuffled mini-batches, so one row gather per step serves every probe and probes on
shared columns share one matrix product.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

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


def _optimizer(cfg: ProbeConfig, steps_per_epoch: int):
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


def _plan(key, w, num_train: int, cfg: ProbeConfig):
    """Every epoch's shuffled batch plan up front: (idx, valid) [epochs * batches, batch],
    and the number of batches per epoch (``num_train`` rows with w > 0, static)."""
    bs = min(cfg.batch_size, num_train) if cfg.batch_size else num_train
    nb = max(1, math.ceil(num_train / bs))
    idx, valid = jax.vmap(lambda k: _batch_plan(k, w, nb, bs, cfg.shuffle))(
        jax.random.split(key, cfg.epochs))
    return idx.reshape(-1, bs), valid.reshape(-1, bs), nb


def fit_probe(X, y, w, feature_mask, l1, l2, key, *, num_classes: int, num_train: int,
              cfg: ProbeConfig = DEFAULT, init_params: dict | None = None):
    """Train one probe with Adam on mini-batches; pure and jittable (``num_train`` static).

    ``num_train`` (the number of rows with w > 0) fixes the number of batches per epoch.
    ``init_params`` replaces the initial probe ``cfg.init`` draws. This is the single-probe
    reference; :func:`fit_blocks` trains many at once with the same updates.
    """
    idx, valid, nb = _plan(key, w, num_train, cfg)
    opt = _optimizer(cfg, nb)
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


# ----------------------------------------------------------------------------- probe blocks
@dataclasses.dataclass(frozen=True)
class Block:
    """A family of probes trained together on columns of one X [N, K] (see :func:`fit_blocks`).

    The block has M column sets, and H heads (probes) on each:

    * ``cols`` [M, Wd] int32 column indices into X, or None for M = ``sets`` contiguous runs
      of ``width`` columns from ``start`` (a slice and a reshape: nothing is gathered);
    * ``mask`` [M, Hm, Wd] feature mask (Hm = 1 or H), 0 drops a column for that probe (layer
      padding, nested subsets); None keeps every column;
    * ``label`` [H]: the row of Y each head predicts; ``l1``, ``l2`` [H]: its penalties.

    Its parameters are W [M, H, Wd, C] and b [M, H, C]: probe (m, h) is
    ``{"W": W[m, h], "b": b[m, h]}`` on columns ``cols[m]`` (masked by ``mask[m, h]``).
    """

    label: jax.Array
    l1: jax.Array
    l2: jax.Array
    cols: jax.Array | None = None
    mask: jax.Array | None = None
    start: int = 0
    width: int = 0
    sets: int = 1

    @property
    def num_sets(self) -> int:
        return self.sets if self.cols is None else self.cols.shape[0]

    @property
    def num_cols(self) -> int:
        return self.width if self.cols is None else self.cols.shape[1]

    @property
    def num_heads(self) -> int:
        return self.label.shape[0]


jax.tree_util.register_dataclass(Block, data_fields=["label", "l1", "l2", "cols", "mask"],
                                 meta_fields=["start", "width", "sets"])


def _block_columns(X, blk: Block):
    """X [B, K] -> the block's columns [B, M, Wd]."""
    if blk.cols is None:
        Xs = jax.lax.slice_in_dim(X, blk.start, blk.start + blk.sets * blk.width, axis=1)
        return Xs.reshape(X.shape[0], blk.sets, blk.width)
    return X[:, blk.cols]


def _block_loss(params, blocks, Xb, Yb, wb, squared_l2: bool):
    """Sum over every probe of every block of :func:`elastic_net_loss` (masked weights are 0).

    Weights are held as [M, H, C, Wd] while training: the gradient's matrix product then
    writes them in place, and the optimiser's element-wise update reads them contiguously."""
    denom = jnp.maximum(jnp.sum(wb), 1.0)
    total = 0.0
    for p, blk in zip(params, blocks):
        W = p["W"]
        logits = jnp.einsum("bmj,mhcj->bmhc", _block_columns(Xb, blk), W) + p["b"]
        tgt = jnp.broadcast_to(Yb[blk.label].T[:, None, :], logits.shape[:-1])   # [B, M, H]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
        ce = jnp.einsum("b,bmh->mh", wb, ce) / denom
        sq = jnp.sum(W * W, axis=(2, 3))
        l2_term = sq if squared_l2 else jnp.sqrt(sq + 1e-12)
        total = total + jnp.sum(ce + blk.l1 * _l1_norm(W, axis=(2, 3)) + blk.l2 * l2_term)
    return total


def init_blocks(blocks, num_classes: int, dtype=jnp.float32, *, init: str = "zeros",
                key=None, rng: np.random.Generator | None = None) -> tuple:
    """Initial parameters in the training layout W [M, H, C, Wd] (see :func:`fit_blocks`):
    zeros, or ``init="uniform"`` as :func:`init_probe` (each probe's fan-in is its unmasked
    columns; masked weights start at 0), drawn from ``key`` in traced code or, given ``rng``,
    as host numpy arrays (nothing to compile)."""
    if init not in ("zeros", "uniform"):
        raise ValueError(f"unknown init {init!r}; use zeros or uniform")
    xp = np if rng is not None else jnp
    out = []
    for i, b in enumerate(blocks):
        shapes = ((b.num_sets, b.num_heads, num_classes, b.num_cols),
                  (b.num_sets, b.num_heads, num_classes))
        if init == "zeros":
            out.append({"W": xp.zeros(shapes[0], dtype), "b": xp.zeros(shapes[1], dtype)})
            continue
        if rng is not None:
            W, bias = (rng.uniform(-1.0, 1.0, sh).astype(dtype) for sh in shapes)
        else:
            W, bias = _uniform_draws(jax.random.fold_in(key, i), *shapes, dtype)
        mask = xp.ones((1, 1, b.num_cols), dtype) if b.mask is None else xp.asarray(b.mask, dtype)
        mask = xp.broadcast_to(mask, shapes[0][:2] + (b.num_cols,))
        bound = 1.0 / xp.sqrt(xp.maximum(mask.sum(-1), 1.0))     # [M, H]
        out.append({"W": W * bound[:, :, None, None] * mask[:, :, None, :],
                    "b": bias * bound[:, :, None]})
    return tuple(out)


def fit_blocks(X, Y, w, blocks, key, *, num_classes: int, num_train: int,
               cfg: ProbeConfig = DEFAULT) -> tuple:
    """Train every probe of every block in one scan; pure and jittable.

    X [N, K], Y [T, N] int labels, w [N] row weights, ``blocks`` a tuple of :class:`Block`.
    All probes see the same shuffled mini-batches (one row gather per step), and each one gets
    exactly the updates :func:`fit_probe` would give it with the same key: the loss is a sum of
    independent per-probe losses. Probes that share columns share one matrix product per step,
    so a block of H nested subsets of one ordering costs one [B, Wd] x [Wd, H*C] product.
    Returns a tuple of ``{"W": [M, H, Wd, C], "b": [M, H, C]}``, one per block.
    """
    idx, valid, nb = _plan(key, w, num_train, cfg)
    params0 = init_blocks(blocks, num_classes, X.dtype, init=cfg.init, key=init_key(key))
    return fit_blocks_planned(X, Y, w, blocks, idx, valid, params0, num_classes=num_classes,
                              steps_per_epoch=nb, cfg=cfg)


def batch_plan(key, w, *, num_train: int, cfg: ProbeConfig = DEFAULT):
    """The shuffled mini-batches :func:`fit_probe` and :func:`fit_blocks` use with this key:
    (idx, valid) [epochs * steps_per_epoch, batch] and steps_per_epoch."""
    return _plan(key, w, num_train, cfg)


def fit_blocks_planned(X, Y, w, blocks, idx, valid, params0, *, num_classes: int,
                       steps_per_epoch: int, cfg: ProbeConfig = DEFAULT) -> tuple:
    """:func:`fit_blocks` on a given batch plan (from :func:`batch_plan`) and initial
    parameters ``params0`` (from :func:`init_blocks`), so that the plan's sort is computed
    (and compiled) once for several calls."""
    opt = _optimizer(cfg, steps_per_epoch)
    params = params0
    # gradient masks [M, Hm, 1, Wd]: masked weights start at 0 and get no gradient (the
    # penalties' gradients vanish at 0), so they stay 0 and the forward pass needs no mask
    gmask = tuple(None if b.mask is None else b.mask[:, :, None, :] for b in blocks)

    def step(carry, inputs):
        params, state = carry
        i, v = inputs
        g = jax.grad(_block_loss)(params, blocks, X[i], Y[:, i], w[i] * v, cfg.squared_l2)
        g = tuple(gp if m is None else {"W": gp["W"] * m, "b": gp["b"]} for gp, m in zip(g, gmask))
        updates, state = opt.update(g, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (idx, valid))
    return tuple({"W": jnp.swapaxes(p["W"], 2, 3), "b": p["b"]} for p in params)


def predict_blocks(X, blocks, params) -> tuple:
    """Classes [M, H, N] of every probe of every block on X [N, K] (``params`` as returned
    by :func:`fit_blocks`)."""
    out = []
    for p, blk in zip(params, blocks):
        logits = jnp.einsum("nmj,mhjc->nmhc", _block_columns(X, blk), p["W"]) + p["b"]
        out.append(jnp.transpose(jnp.argmax(logits, -1), (1, 2, 0)))
    return tuple(out)


def fit_probe_streaming(batches: "callable", num_features: int, num_classes: int,
                        feature_mask, l1, l2, steps_per_epoch: int, cfg: ProbeConfig = DEFAULT,
                        vmap_axes: int = 0, key=None):
    """Train probes when X does not fit in memory.

    ``batches(epoch)`` yields ``(Xb, yb, wb)`` host arrays read from the memory-mapped store; a
    jitted Adam step (the same loss as :func:`fit_probe`) runs per batch. With ``vmap_axes=1``
    ``Xb`` is [L, B, D] and ``feature_mask`` [L, D]: every layer is updated in one call.
    """
    opt = _optimizer(cfg, steps_per_epoch)

    def step(params, state, Xb, yb, wb, mask):
        g = jax.grad(elastic_net_loss)(params, Xb, yb, wb, mask, l1, l2, cfg.squared_l2)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    def init(mask, k):
        return init_probe(num_features, num_classes, init=cfg.init, key=k, feature_mask=mask)

    if vmap_axes:
        step = jax.vmap(step, in_axes=(0, 0, 0, None, None, 0))
        init = jax.vmap(init)
    step = jax.jit(step)
    key = jax.random.PRNGKey(0) if key is None else key
    mask = jnp.asarray(feature_mask)
    params = init(mask, jax.random.split(key, mask.shape[0]) if vmap_axes else key)
    state = jax.vmap(opt.init)(params) if vmap_axes else opt.init(params)
    for e in range(cfg.epochs):
        for Xb, yb, wb in batches(e):
            params, state = step(params, state, jnp.asarray(Xb), jnp.asarray(yb),
                                 jnp.asarray(wb, jnp.float32), jnp.asarray(feature_mask))
    return params


def predict(params, X, feature_mask=None) -> jax.Array:
    return jnp.argmax(probe_logits(params, X, feature_mask), axis=-1)


def iterate_minibatches(n_rows: int, batch_size: int, seed: int,
                        shuffle: bool = True) -> Iterator[np.ndarray]:
    """Row-index batches, shuffled or in row order (host side, for streaming from memory
    maps)."""
    order = np.random.default_rng(seed).permutation(n_rows) if shuffle else np.arange(n_rows)
    for s in range(0, n_rows, batch_size):
        yield np.sort(order[s:s + batch_size])
