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


# NeuroX's own settings: Adam, lr 1e-3, mini-batches of 32, 10 epochs, l1 = l2 = 1e-5,
# un-squared L2, no grid search.
NEUROX = ProbeConfig()

# A well-converged default: larger batches, more epochs with a cosine-decayed, larger learning
# rate, and l1 = l2 chosen on dev from a small grid.
DEFAULT = ProbeConfig(epochs=40, batch_size=256, learning_rate=1e-2, lr_schedule="cosine",
                      lambdas=((1e-5, 1e-5), (1e-4, 1e-4), (1e-3, 1e-3), (1e-2, 1e-2)))

CONFIGS = {"neurox": NEUROX, "default": DEFAULT}


def init_probe(num_features: int, num_classes: int, dtype=jnp.float32) -> dict:
    return {"W": jnp.zeros((num_features, num_classes), dtype),
            "b": jnp.zeros((num_classes,), dtype)}


def probe_logits(params: dict, X: jax.Array, feature_mask: jax.Array | None = None) -> jax.Array:
    W = params["W"] if feature_mask is None else params["W"] * feature_mask[:, None]
    return X @ W + params["b"]


def elastic_net_penalty(W: jax.Array, l1, l2, squared_l2: bool = False) -> jax.Array:
    l2_term = jnp.sum(W * W) if squared_l2 else jnp.sqrt(jnp.sum(W * W) + 1e-12)
    return l1 * jnp.sum(jnp.abs(W)) + l2 * l2_term


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


def _batch_plan(key, w: jax.Array, num_batches: int, batch_size: int):
    """Shuffled row indices [num_batches, batch_size] over the rows with w > 0, padded with w=0.

    Rows with zero weight are sorted to the end so batches hold (almost) only training rows.
    """
    n = w.shape[0]
    noise = jax.random.uniform(key, (n,))
    order = jnp.argsort(jnp.where(w > 0, noise, 2.0 + noise))
    total = num_batches * batch_size
    idx = jnp.concatenate([order, jnp.zeros((max(total - n, 0),), order.dtype)])[:total]
    valid = jnp.concatenate([jnp.ones((n,)), jnp.zeros((max(total - n, 0),))])[:total]
    return idx.reshape(num_batches, batch_size), valid.reshape(num_batches, batch_size)


def fit_probe(X, y, w, feature_mask, l1, l2, key, *, num_classes: int, num_train: int,
              cfg: ProbeConfig = DEFAULT):
    """Train one probe with Adam on mini-batches; pure and jittable (``num_train`` static).

    ``num_train`` (the number of rows with w > 0) fixes the number of batches per epoch.
    """
    bs = min(cfg.batch_size, num_train) if cfg.batch_size else num_train
    nb = max(1, math.ceil(num_train / bs))
    opt = _optimizer(cfg, nb)
    params = init_probe(X.shape[1], num_classes, X.dtype)
    # every epoch's shuffled batch plan up front, then one flat scan over all steps
    idx, valid = jax.vmap(lambda k: _batch_plan(k, w, nb, bs))(jax.random.split(key, cfg.epochs))
    idx, valid = idx.reshape(-1, bs), valid.reshape(-1, bs)

    def step(carry, inputs):
        params, state = carry
        i, v = inputs
        g = jax.grad(elastic_net_loss)(params, X[i], y[i], w[i] * v, feature_mask, l1, l2,
                                       cfg.squared_l2)
        updates, state = opt.update(g, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (idx, valid))
    return params


def fit_probe_streaming(batches: "callable", num_features: int, num_classes: int,
                        feature_mask, l1, l2, steps_per_epoch: int, cfg: ProbeConfig = DEFAULT,
                        vmap_axes: int = 0):
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

    def init(mask):
        return init_probe(num_features, num_classes)

    if vmap_axes:
        step = jax.vmap(step, in_axes=(0, 0, 0, None, None, 0))
        init = jax.vmap(init)
    step = jax.jit(step)
    params = init(jnp.asarray(feature_mask))
    state = jax.vmap(opt.init)(params) if vmap_axes else opt.init(params)
    for e in range(cfg.epochs):
        for Xb, yb, wb in batches(e):
            params, state = step(params, state, jnp.asarray(Xb), jnp.asarray(yb),
                                 jnp.asarray(wb, jnp.float32), jnp.asarray(feature_mask))
    return params


def predict(params, X, feature_mask=None) -> jax.Array:
    return jnp.argmax(probe_logits(params, X, feature_mask), axis=-1)


def iterate_minibatches(n_rows: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Shuffled row-index batches (host side, for streaming from memory maps)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    for s in range(0, n_rows, batch_size):
        yield np.sort(order[s:s + batch_size])
