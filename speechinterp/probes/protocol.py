"""The probing protocol of docs/method.md (Linguistic Correlation Analysis, NeuroX), vectorised.

:func:`run_probing` trains every probe of a task in two jitted calls of
:func:`~.elastic_net.fit_bands_planned` (every probe reads a column interval of one X; the
intervals are cut into bands, column ranges that are one matrix product per step for all the
probes reading them; one mini-batch gather per step serves every probe, and each probe gets
exactly :func:`~.elastic_net.fit_probe`'s updates):

1. layer-wise: labels (task + control) x layers x lambda grid x seeds, next to the oracle on all
   layers side by side x lambda grid. Each layer is one band, shared by its probes and the
   oracle's weights on that layer, so layers of different widths need no padding;
2. after the NeuroX ranking of the oracle: every minimal-subset candidate, i.e. the top-n prefix
   of the ranking for every candidate size n (which include the top-k% ablation retrains), and
   the bottom / random k% retrains (suffixes of the ranking; prefixes of one random order, whose
   columns are appended). Nested intervals become a staircase of bands chosen by dynamic
   programming (:func:`~.elastic_net.interval_bands`): wide bands of many probes near the
   start, narrow ones at the end, so the weights trained stay within ~20% of the probes' own.

Zero-out ablation masks the trained oracle; per-neuron (univariate) probes of every neuron of
every layer are one more vmapped call. The shapes of both training calls are known when the
store is opened, so they are compiled in background threads while the data loads.
:func:`fit_grid` and :func:`fit_layers` (vmapped :func:`~.elastic_net.fit_probe`, probe axis
sharded over local devices) remain for direct use.

:func:`run_probing` returns ``(results, details)``: ``results`` has exactly the keys of
docs/formats.md's ``results.json``; ``details`` holds the rest (chosen lambdas, seed spread,
per-neuron accuracies, timings).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from speechinterp.bootstrap import LEVEL, RESAMPLES, ci_list, cluster_bootstrap_ci
from speechinterp.probes import data as D
from speechinterp.probes import ranking as R
from speechinterp.probes.elastic_net import (DEFAULT, ProbeConfig, batch_plan,
                                             fit_bands_planned, fit_probe, init_bands,
                                             interval_bands, predict_bands, probe_weights,
                                             setting_name)
from speechinterp.store import Store

ABLATION_PCTS = (1, 5, 10, 15, 20, 50)
SELECTIONS = ("top", "random", "bottom")


# ----------------------------------------------------------------------------- vmapped fits
def _shard_probes(arrays, n):
    """Pad the leading (probe) axis of ``arrays`` to a multiple of the local device count and
    shard it over a 1-D mesh, so each device trains its share of the probes (docs/design.md: probe
    stacks shard over the probe axis). A no-op on one device or for fewer probes than devices."""
    devs = jax.local_devices()
    if len(devs) == 1 or n < len(devs):
        return [jnp.asarray(a) for a in arrays]
    pad = (-n) % len(devs)
    sharding = NamedSharding(Mesh(np.array(devs), ("probe",)), PartitionSpec("probe"))
    out = []
    for a in arrays:
        a = jnp.asarray(a)
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
        out.append(jax.device_put(a, sharding))
    return out


# ----------------------------------------------------------------------------- ahead-of-time
# The shapes of every probe family of a run are known before training starts, so their XLA
# compilations can run concurrently (compilation is single-threaded) while the first family
# trains. ``_AOT`` maps (argument tree and shapes, statics) to a future compiled executable.
_AOT: dict = {}
_POOL = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2)))


def _sds(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype))


def fit_grid(X, y, w, mask, l1, l2, keys, **statics):
    """Probes for X [N, D], y [T, N] (task + controls), mask [M, D] (subsets), lambdas [G],
    keys [S] -> params with leading axes [T, M, G, S]; the M axis is sharded over devices."""
    M = mask.shape[0]
    (mask,) = _shard_probes([mask], M)
    P = _fit_grid(X, y, w, mask, l1, l2, keys, **statics)
    return jax.tree.map(lambda a: a[:, :M], P)


def fit_layers(X, y, w, mask, l1, l2, keys, **statics):
    """Probes for stacked layers X [L, N, D] with masks [L, D], labels y [T, N], lambdas [G],
    keys [S] -> params with leading axes [T, L, G, S]; the L axis is sharded over devices."""
    L = X.shape[0]
    X, mask = _shard_probes([X, mask], L)
    P = _fit_layers(X, y, w, mask, l1, l2, keys, **statics)
    return jax.tree.map(lambda a: a[:, :L], P)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_train", "cfg"))
def _fit_grid(X, y, w, mask, l1, l2, keys, *, num_classes, num_train, cfg):
    """Jitted core of :func:`fit_grid`."""
    fit = functools.partial(fit_probe, num_classes=num_classes, num_train=num_train, cfg=cfg)
    f = jax.vmap(fit, in_axes=(None, None, None, None, None, None, 0))      # seeds
    f = jax.vmap(f, in_axes=(None, None, None, None, 0, 0, None))           # lambdas
    f = jax.vmap(f, in_axes=(None, None, None, 0, None, None, None))        # masks
    f = jax.vmap(f, in_axes=(None, 0, None, None, None, None, None))        # labels
    return f(X, y, w, mask, l1, l2, keys)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_train", "cfg"))
def _fit_layers(X, y, w, mask, l1, l2, keys, *, num_classes, num_train, cfg):
    """Jitted core of :func:`fit_layers`."""
    fit = functools.partial(fit_probe, num_classes=num_classes, num_train=num_train, cfg=cfg)
    f = jax.vmap(fit, in_axes=(None, None, None, None, None, None, 0))      # seeds
    f = jax.vmap(f, in_axes=(None, None, None, None, 0, 0, None))           # lambdas
    f = jax.vmap(f, in_axes=(0, None, None, 0, None, None, None))           # layers
    f = jax.vmap(f, in_axes=(None, 0, None, None, None, None, None))        # labels
    return f(X, y, w, mask, l1, l2, keys)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_train", "cfg"))
def fit_neurons(X, y, w, l1, l2, key, *, num_classes, num_train, cfg):
    """One univariate probe per column of X [N, D] -> params with leading axis [D]; ``key``
    a PRNG key, or an int seed (the first key of :func:`seed_keys`)."""
    if not jnp.issubdtype(jnp.asarray(key).dtype, jnp.unsignedinteger):
        key = seed_keys(key, 1)[0]
    fit = functools.partial(fit_probe, num_classes=num_classes, num_train=num_train, cfg=cfg)
    one = jnp.ones((1,), X.dtype)
    return jax.vmap(lambda x: fit(x[:, None], y, w, one, l1, l2, key))(X.T)


def zero_out_predictions(W, b, X, masks) -> np.ndarray:
    """Classes [M, N] of one probe W [D, C], b [C] on X [N, D] with all but the neurons of
    each mask [M, D] zeroed (zero-out ablation; Dalvi et al., AAAI 2019)."""
    M, (Dn, C) = masks.shape[0], W.shape
    Wm = (masks[:, :, None] * W[None]).transpose(1, 0, 2).reshape(Dn, M * C)
    logits = (X @ Wm).reshape(X.shape[0], M, C) + b
    return np.argmax(logits, -1).T


@jax.jit
def predict_layers(W, b, X, mask):
    """Classes [T, L, G, S, N] of layer probes W [T, L, G, S, D, C] on X [L, N, D]."""
    T, L, G, S, Dn, C = W.shape
    Wm = W * mask[None, :, None, None, :, None]
    Wf = jnp.transpose(Wm, (1, 4, 0, 2, 3, 5)).reshape(L, Dn, T * G * S * C)
    logits = jnp.einsum("lnd,ldk->lnk", X, Wf).reshape(L, X.shape[1], T, G, S, C)
    logits = logits + jnp.transpose(b, (1, 0, 2, 3, 4))[:, None]
    return jnp.transpose(jnp.argmax(logits, -1), (2, 0, 3, 4, 1))


@jax.jit
def predict_neurons(W, b, X):
    """Classes [D, N] of univariate probes W [D, 1, C], b [D, C] on the columns of X [N, D]."""
    def one(args):
        x, w_, b_ = args
        return jnp.argmax(x[:, None] * w_[0][None] + b_[None], -1)
    return jax.lax.map(one, (X.T, W, b), batch_size=64)


def _interval_probes(specs):
    """Concatenate probe specs (lo, hi, label, l1, l2 arrays) into one set of probes."""
    out = [np.concatenate([np.asarray(sp[i]) for sp in specs]) for i in range(5)]
    return [a.astype(t) for a, t in zip(out, (np.int64, np.int64, np.int32, np.float32,
                                               np.float32))]


def layer_probes(dims, l1s, l2s, layers: bool = True, oracle: bool = True):
    """Probe intervals of call 1 on all layers side by side: for each layer, the task then the
    control probe for every lambda; then the oracle (all columns) for every lambda. Returns
    (lo, hi, label, l1, l2)."""
    offs = np.cumsum([0] + list(dims))
    G = len(l1s)
    specs = []
    if layers:
        for k, d in enumerate(dims):
            specs.append((np.full(2 * G, offs[k]), np.full(2 * G, offs[k] + d),
                          np.repeat([0, 1], G), np.tile(l1s, 2), np.tile(l2s, 2)))
    if oracle:
        specs.append((np.zeros(G), np.full(G, offs[-1]), np.zeros(G), l1s, l2s))
    return _interval_probes(specs)


def subset_probes(prefixes, pct_sizes, ntot: int, l1: float, l2: float):
    """Probe intervals of call 2 on ``[X in ranking order | the first max(pct_sizes) columns of
    a random order]``: every top-n prefix (ascending), the bottom k% (the last columns of the
    ranking; descending) and the random k% (ascending). Returns ((lo, hi, label, l1, l2),
    bottom_ids, random_ids) with the probe index of each entry of ``pct_sizes``."""
    prefixes = np.asarray(prefixes)
    order = np.argsort(pct_sizes, kind="stable")
    ps = np.asarray(pct_sizes)[order]
    n1, k = len(prefixes), len(ps)
    lo = np.concatenate([np.zeros(n1), ntot - ps[::-1], np.full(k, ntot)])
    hi = np.concatenate([prefixes, np.full(k, ntot), ntot + ps])
    P = len(lo)
    bottom_ids, random_ids = np.empty(k, np.int64), np.empty(k, np.int64)
    bottom_ids[order[::-1]] = n1 + np.arange(k)
    random_ids[order] = n1 + k + np.arange(k)
    return (_interval_probes([(lo, hi, np.zeros(P), np.full(P, l1), np.full(P, l2))]),
            bottom_ids, random_ids)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps_per_epoch", "cfg"))
def fit_eval_bands(X, Y, w, bands, idx, valid, params0, X_eval, *, num_classes,
                   steps_per_epoch, cfg):
    """:func:`~.elastic_net.fit_bands_planned` for every seed's batch plan ``idx``, ``valid``
    [S, steps, batch] and initial parameters ``params0`` (leading axis [S]), and the predicted
    classes on ``X_eval``: (params with a leading [S] axis, classes [S, P, N_eval])."""
    def one(i, v, p0):
        P = fit_bands_planned(X, Y, w, bands, i, v, p0, num_classes=num_classes,
                              steps_per_epoch=steps_per_epoch, cfg=cfg)
        return P, predict_bands(X_eval, bands, P)
    if idx.shape[0] == 1:   # one seed: no vmap (a third less tracing)
        out = one(idx[0], valid[0], jax.tree.map(lambda a: a[0], params0))
        return jax.tree.map(lambda a: a[None], out)
    return jax.vmap(one)(idx, valid, params0)


def _initial_params(bands, num_classes: int, cfg: ProbeConfig, seed: int, seeds: int):
    """Initial parameters of ``bands`` for each of ``seeds`` seeds (leading axis), drawn on the
    host (:func:`~.elastic_net.init_bands`)."""
    per_seed = [init_bands(bands, num_classes, np.float32, init=cfg.init,
                           rng=np.random.default_rng([seed, s])) for s in range(seeds)]
    return jax.tree.map(lambda *a: np.stack(a), *per_seed)


def seed_keys(seed, seeds: int):
    """The batch-plan key of each of ``seeds`` seeds (traced inside the jitted callers, so
    that nothing is compiled for them alone)."""
    return jax.random.split(jax.random.PRNGKey(seed), seeds)


@functools.partial(jax.jit, static_argnames=("seeds", "num_train", "cfg"))
def batch_plans(seed, w, *, seeds, num_train, cfg):
    """:func:`~.elastic_net.batch_plan` for each seed's key (:func:`seed_keys`): idx, valid
    [S, steps, batch]."""
    return jax.vmap(lambda k: batch_plan(k, w, num_train=num_train, cfg=cfg)[:2])(
        seed_keys(seed, seeds))


def _steps_per_epoch(num_train: int, cfg: ProbeConfig) -> int:
    bs = min(cfg.batch_size, num_train) if cfg.batch_size else num_train
    return max(1, -(-num_train // bs))


def _sds_tree(tree):
    return jax.tree.map(lambda a: _sds(np.shape(a), a.dtype), tree)


def _run_bands(args, statics, compiled=None):
    """Run :func:`fit_eval_bands`, with the executable compiled ahead of time if given."""
    if compiled is not None:
        return compiled.result()(*args)
    return fit_eval_bands(*args, **statics)


def _precompile_bands(args, statics):
    """Compile :func:`fit_eval_bands` for these arguments' shapes in the background (kept
    for later runs with the same shapes: other tasks of the same store)."""
    if len(jax.local_devices()) > 1:
        return None
    sds = _sds_tree(args)
    leaves, tree = jax.tree.flatten(sds)
    key = ("fit_eval_bands", tree, tuple((l.shape, str(l.dtype)) for l in leaves),
           tuple(sorted(statics.items())))
    if key not in _AOT:
        if len(_AOT) > 64:   # bound the executables kept alive across many tasks
            _AOT.clear()
        _AOT[key] = _POOL.submit(lambda: fit_eval_bands.lower(*sds, **statics).compile())
    return _AOT[key]


def _take_columns(X: np.ndarray, idx: np.ndarray, threads: int = 2) -> np.ndarray:
    """Columns ``idx`` of X into a page-aligned array (see :func:`~.data.aligned_empty`), rows
    split over ``threads`` threads (numpy releases the GIL while it copies)."""
    out = D.aligned_empty((X.shape[0], len(idx)), X.dtype)
    if threads < 2:
        return np.take(X, idx, axis=1, out=out, mode="clip")
    parts = np.array_split(np.arange(X.shape[0]), threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda r: np.take(X[r[0]:r[-1] + 1], idx, axis=1,
                                        out=out[r[0]:r[-1] + 1], mode="clip"), parts))
    return out


def _acc(pred: np.ndarray, y: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Accuracy over the rows ``sel`` along the last axis of ``pred``."""
    return np.mean(pred[..., sel] == y[sel], axis=-1)


def _metrics(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-F1 (scikit-learn; imported on first use, see :func:`run_probing`)."""
    from sklearn.metrics import accuracy_score, f1_score
    return float(accuracy_score(y, pred)), float(f1_score(y, pred, average="macro"))


# ----------------------------------------------------------------------------- protocol
def run_probing(store: Store, task: str, cfg: ProbeConfig = DEFAULT, *, seed: int = 0,
                seeds: int = 1, delta: float = 0.01, search_stride: int = 100,
                ablation_pcts=ABLATION_PCTS,
                band_cost: float = 3000.0, layerwise_only: bool = False,
                per_neuron: bool = True, progress: Callable[[str], None] | None = None):
    """Run the whole protocol of docs/method.md for one task on one store.

    Two jitted calls train everything: (1) the layer-wise task and control probes (lambda grid,
    seeds) next to the oracle on all layers concatenated; (2) after the ranking, every
    minimal-subset candidate (the top-n prefixes, which include the top-k% ablations) and the
    random / bottom ablation retrains. Both are compiled ahead of time while the data loads.
    ``band_cost`` is the cost of one more band, in weights / num_classes, when the probes of a
    call are cut into bands (:func:`~.elastic_net.interval_bands`). ``layerwise_only`` stops
    after the layer-wise probes (results then hold task, classes, majority_accuracy,
    split_sizes and layers). Every candidate is trained in the one
    call; the chosen subset is the one a search stopping at the first size that reaches the
    target would choose.
    """
    say = progress or (lambda s: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # scikit-learn's import (~1 s) overlaps the data loading instead of delaying the start
    threading.Thread(target=importlib.import_module, args=("sklearn.metrics",),
                     daemon=True).start()
    td = D.prepare_task(store, task, seed)
    dims = list(store.dims)
    names = store.layer_names
    # rows: the training rows first, then the rows the probes are evaluated on (dev, test),
    # each in store order, so that the evaluation rows of X are a view of it. The mini-batches
    # of both training calls are drawn on the store order and mapped to the new rows (the
    # per-neuron probes, with shuffle, draw theirs on the new order).
    train0 = td.split == D.TRAIN
    order = np.argsort(~train0, kind="stable")
    new_row = np.empty(len(order), np.int32)
    new_row[order] = np.arange(len(order))
    y, split = td.y[order], td.split[order]
    tr, dv, te = split == D.TRAIN, split == D.DEV, split == D.TEST
    ev = np.flatnonzero(~tr)                      # rows the probes are evaluated on
    dv_e, te_e = dv[ev], te[ev]
    y_e = y[ev]
    ntr, C, L, G = int(tr.sum()), td.num_classes, len(dims), len(cfg.lambdas)
    ntot = sum(dims)
    l1s = np.asarray([a for a, _ in cfg.lambdas], np.float32)
    l2s = np.asarray([b for _, b in cfg.lambdas], np.float32)
    statics = dict(num_classes=C, num_train=ntr, cfg=cfg)
    nb = _steps_per_epoch(ntr, cfg)
    bstat = dict(num_classes=C, steps_per_epoch=nb, cfg=cfg)
    ctrl = D.control_labels(td, seed)[order]
    N = len(y)
    bs = min(cfg.batch_size, ntr) if cfg.batch_size else ntr
    plan_sds = lambda S: (_sds((S, cfg.epochs * nb, bs), jnp.int32),
                          _sds((S, cfg.epochs * nb, bs)))
    init_sds = lambda bands, S: jax.tree.map(lambda a: _sds((S,) + a.shape),
                                             init_bands(bands, C))

    # --- the probes of both calls (their shapes only depend on the store), compiled in the
    # background while the data loads. Call 1: every layer's task and control probes next to
    # the oracle, which reads all layers, for every seed: each layer is one band shared by its
    # probes and the oracle's weights on it (different layer widths need no padding).
    bands1 = interval_bands(*layer_probes(dims, l1s, l2s, oracle=not layerwise_only),
                            band_cost=band_cost)
    w = np.asarray(tr, np.float32)
    Y = np.stack([y, ctrl]).astype(np.int32)
    X_sds, Xe_sds = _sds((N, ntot)), _sds((len(ev), ntot))
    # every family's mini-batches: one plan per seed, shared by all probes of that seed
    # (computed in the background, as the data loads)
    def store_order_plans():
        idx, valid = jax.tree.map(np.asarray, batch_plans(
            seed, train0.astype(np.float32), seeds=seeds, num_train=ntr, cfg=cfg))
        return new_row[idx], valid

    plan = _POOL.submit(store_order_plans)
    fut1 = _precompile_bands((X_sds, Y, w, bands1) + plan_sds(seeds)
                             + (init_sds(bands1, seeds), Xe_sds), bstat)
    sizes = R.minimal_subset_sizes(ntot)
    pct_sizes = [max(1, int(round(p / 100.0 * ntot))) for p in ablation_pcts]
    # top-n prefixes to train: the candidates, and the top-k% retrains (normally among them)
    prefixes = np.union1d(sizes, pct_sizes)
    # call 2 reads [X in ranking order | X in a random order, its first max(pct_sizes) columns]
    next_ = ntot + max(pct_sizes)
    if not layerwise_only:
        # the lambdas are set once the oracle's is chosen (they are data: shapes are final)
        spec2, bottom_ids, random_ids = subset_probes(prefixes, pct_sizes, ntot, 0.0, 0.0)
        bands2 = interval_bands(*spec2, band_cost=band_cost)
        fut2 = _precompile_bands((_sds((N, next_)), Y, w, bands2) + plan_sds(1)
                                 + (init_sds(bands2, 1), _sds((len(ev), next_))), bstat)
    # standardised once, all layers side by side; the layers are column ranges of it
    # (host-side indexing throughout: indexing a jax array would compile a gather)
    # (page-aligned host arrays: device_put shares them on CPU instead of copying)
    Xall = D.load_concatenated(store, td, order)
    Xall_j, Xe = jax.device_put(Xall), jax.device_put(Xall[ntr:])
    timings["load"] = time.perf_counter() - t0

    # intervals: a bootstrap over the test rows, clustered by speaker where there is one; the
    # same resamples for every probe of the task
    te_clusters = td.groups[order][ev][te_e] if td.groups is not None else None
    y_te = y_e[te_e]

    def interval(correct):
        """95% intervals [..., 2] of the accuracies given correct [..., num_test]."""
        return cluster_bootstrap_ci(correct, te_clusters, seed=seed)

    majority_correct = y_te == D.majority_class(td)
    header = {"task": task, "classes": td.classes, "probe_setting": setting_name(cfg),
              "majority_accuracy": D.majority_accuracy(td),
              "majority_accuracy_ci95": ci_list(interval(majority_correct)),
              "split_sizes": td.split_sizes(),
              "speakers_per_class": D.speakers_per_class(td),
              "interval": {"method": "percentile bootstrap", "level": LEVEL,
                           "resamples": RESAMPLES,
                           "resampled": "test speakers" if te_clusters is not None
                           else "test utterances",
                           "num_resampled": int(len(np.unique(te_clusters))
                                                if te_clusters is not None else len(y_te))}}

    # --- call 1: layer-wise task + control x lambdas x seeds, and the oracle x lambdas x seeds
    say("layer-wise probes")
    t = time.perf_counter()
    plan = plan.result()
    P1, pred1 = _run_bands((Xall_j, Y, w, bands1, plan[0][:seeds], plan[1][:seeds],
                            _initial_params(bands1, C, cfg, seed, seeds), Xe), bstat, fut1)
    pred1 = np.asarray(pred1)                                       # [S, P1, N_eval]
    nl = L * 2 * G                                                  # layer probes
    pred = pred1[:, :nl].reshape(seeds, L, 2, G, -1).transpose(2, 1, 3, 0, 4)  # [T,L,G,S,N_e]
    layer_rows, layer_lambdas, layer_std = layerwise_results(
        pred, np.stack([y_e, ctrl[ev]]), dv_e, te_e, names, dims, cfg, interval,
        majority_correct, control_applies=not D.control_is_relabelling(td))
    timings["layerwise"] = time.perf_counter() - t
    details = {"probe_setting": setting_name(cfg),
               "config": {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
                          "learning_rate": cfg.learning_rate, "lr_schedule": cfg.lr_schedule,
                          "squared_l2": cfg.squared_l2,
                          "lambdas": [list(l) for l in cfg.lambdas], "seeds": seeds,
                          "seed": seed, "search_stride": search_stride},
               "num_missing_labels": td.num_missing, "layer_lambdas": layer_lambdas,
               "layer_seed_spread": layer_std, "timings_s": timings}
    if layerwise_only:
        results = {**header, "layers": layer_rows}
        results["convergence"] = convergence_diagnostic(results)
        return results, details

    # --- oracle: all layers concatenated, the lambda chosen on dev (trained in call 1)
    say("oracle probe")
    t = time.perf_counter()
    pred_o = pred1[:, nl:nl + G]                                    # [S, G, N_eval]
    g_o = int(_acc(pred_o, y_e, dv_e).mean(0).argmax())
    P1 = jax.tree.map(np.asarray, P1)   # host indexing: nothing to compile
    oracle_Ws = [probe_weights(jax.tree.map(lambda a: a[s], P1), bands1, nl + g_o, ntot)
                 for s in range(seeds)]
    oracle_W, oracle_b = oracle_Ws[0], P1["b"][0][nl + g_o]
    correct_o = pred_o[:, g_o][:, te_e] == y_te                     # [S, N_test]
    oracle_f1 = float(np.mean([_metrics(pred_o[s, g_o][te_e], y_te)[1] for s in range(seeds)]))
    oracle_dev = float(_acc(pred_o[:, g_o], y_e, dv_e).mean())
    lam = cfg.lambdas[g_o]
    del P1, pred1
    timings["oracle"] = time.perf_counter() - t

    # --- ranking: NeuroX weight mass over each seed's oracle (the first seed's is used, the
    # others measure its stability); per-neuron probe accuracy as a second
    say("ranking")
    t = time.perf_counter()
    orderings = [R.weight_mass_ordering(W_s, search_stride) for W_s in oracle_Ws]
    ordering, cutoffs = orderings[0]
    stability = (R.ranking_stability([o for o, _ in orderings]) if seeds > 1 else None)
    index = D.neuron_index(dims)
    neuron_dev_acc = None
    if per_neuron:
        Pn = fit_neurons(Xall_j, y, w, np.float32(lam[0]), np.float32(lam[1]), seed,
                         **statics)
        pn = np.asarray(predict_neurons(Pn["W"], Pn["b"], Xall_j))              # [D, N]
        neuron_dev_acc = _acc(pn, y, dv)
        del Pn, pn
    timings["ranking"] = time.perf_counter() - t

    # --- call 2: every minimal-subset candidate (top-n prefixes of the ordering, which are
    # also the top-k% retrains) and the random / bottom retrains, on the ordered columns
    say("ablation")
    t = time.perf_counter()
    # bottom k%: the last k% of the ranking; random k%: the first k% of one random permutation
    # (nested, as the top k% are), its columns appended after the ranked ones
    rand_perm = R.random_order(ntot, seed)
    P2 = bands2.num_probes
    bands2 = dataclasses.replace(bands2, l1=np.full(P2, lam[0], np.float32),
                                 l2=np.full(P2, lam[1], np.float32))
    X_ext = _take_columns(Xall, np.concatenate([ordering, rand_perm[:next_ - ntot]]))
    Xe_ext = X_ext[ntr:]
    out2 = _run_bands((jax.device_put(X_ext), Y, w, bands2, plan[0][:1], plan[1][:1],
                       _initial_params(bands2, C, cfg, seed + 1, 1), jax.device_put(Xe_ext)),
                      bstat, fut2)
    del X_ext, Xe_ext
    pred2 = np.asarray(out2[1])[0]                                 # [P2, N_eval]
    del out2
    n1 = len(prefixes)
    dev_p = _acc(pred2[:n1], y_e, dv_e)
    correct2 = pred2[:, te_e] == y_te                              # [P2, N_test]
    test_2, ci_2 = correct2.mean(-1), interval(correct2)
    retrain_ids = {"top": np.searchsorted(prefixes, pct_sizes), "bottom": bottom_ids,
                   "random": random_ids}
    # zero-out: the trained oracle with all but the kept neurons' weights zeroed (the same
    # selections as the retrains)
    sel_keys = [(how, pct) for pct in ablation_pcts for how in SELECTIONS]
    sel_masks = np.zeros((len(sel_keys), ntot), np.float32)
    for i, (how, pct) in enumerate(sel_keys):
        sel_masks[i, R.select(ordering, pct / 100.0, how, seed=seed)] = 1
    te_rows = ev[te_e]
    correct_z = zero_out_predictions(oracle_W, oracle_b, Xall[te_rows], sel_masks) == y_te
    test_z, ci_z = correct_z.mean(-1), interval(correct_z)
    ablation = {mode: {how: {} for how in SELECTIONS} for mode in ("retrain", "zero_out")}
    ablation_ci = {mode: {how: {} for how in SELECTIONS} for mode in ("retrain", "zero_out")}
    for how in SELECTIONS:
        for i, pct in enumerate(ablation_pcts):
            p = int(retrain_ids[how][i])
            ablation["retrain"][how][str(pct)] = float(test_2[p])
            ablation_ci["retrain"][how][str(pct)] = ci_list(ci_2[p])
    for i, (how, pct) in enumerate(sel_keys):
        ablation["zero_out"][how][str(pct)] = float(test_z[i])
        ablation_ci["zero_out"][how][str(pct)] = ci_list(ci_z[i])
    timings["ablation"] = time.perf_counter() - t

    # --- minimal subset: the smallest candidate whose dev accuracy reaches the target
    say("minimal subset")
    t = time.perf_counter()
    at = np.searchsorted(prefixes, sizes)
    dev_c, test_c = dev_p[at], test_2[:n1][at]
    target = oracle_dev * (1 - delta)
    hit = np.flatnonzero(dev_c >= target)
    pick = int(hit[0]) if len(hit) else len(sizes) - 1
    n_min = int(sizes[pick])
    chosen = index[ordering[:n_min]]
    per_layer = {name: int(np.sum(chosen[:, 0] == k)) for k, name in enumerate(names)}
    timings["minimal_subset"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    results = {
        **header,
        "layers": layer_rows,
        "oracle": {"accuracy": float(correct_o.mean()),
                   "accuracy_ci95": ci_list(interval(correct_o.mean(0))),
                   "gain_ci95": ci_list(interval(correct_o.mean(0) - majority_correct)),
                   "accuracy_seed_sd": float(correct_o.mean(-1).std()), "f1_macro": oracle_f1},
        "ranking": index[ordering].tolist(),
        "ranking_stability": stability,
        "minimal_subset": {"delta": float(delta), "size": n_min, "fraction": n_min / ntot,
                           "accuracy": float(test_c[pick]),
                           "accuracy_ci95": ci_list(ci_2[at[pick]]), "neurons": chosen.tolist(),
                           "per_layer": per_layer},
        "ablation": ablation,
        "ablation_ci95": ablation_ci,
    }
    results["convergence"] = convergence_diagnostic(results)
    details.update({
        "oracle_lambda": list(lam),
        "oracle_dev_accuracy": oracle_dev,
        "oracle_seed_accuracy": correct_o.mean(-1).tolist(),
        "minimal_subset_found": bool(len(hit)),
        "subset_candidates": {"sizes": sizes.tolist(),
                              "dev_accuracy": [None if np.isnan(v) else v for v in dev_c],
                              "test_accuracy": [None if np.isnan(v) else v for v in test_c]},
        "ranking_cutoffs": cutoffs,
        "ranking_stability": stability,
        "convergence": results["convergence"],
    })
    if neuron_dev_acc is not None:
        acc_order = R.accuracy_ordering(neuron_dev_acc)
        details["ranking_by_neuron_accuracy"] = index[acc_order].tolist()
        details["neuron_dev_accuracy"] = neuron_dev_acc.tolist()
    return results, details


def layerwise_results(pred, labels, dev, test, names, dims, cfg: ProbeConfig, interval,
                      majority_correct, control_applies: bool = True):
    """The ``layers`` rows of results.json from the layer-wise predictions ``pred`` [T (task,
    control), L, G (lambdas), S (seeds), N_eval] and ``labels`` [T, N_eval]: per layer and
    label set the lambda with the best mean dev accuracy over seeds, then the seed-mean test
    accuracy, its interval (``interval``, on the seed-averaged correctness), seed spread and
    the interval of its gain over the majority baseline (``majority_correct`` [N_test], the
    same resamples: a paired interval).
    Control accuracy and selectivity are None where the control task does not apply.
    Returns (rows, lambdas chosen per layer, seed spread per layer)."""
    T, L = pred.shape[:2]
    dev_acc = np.stack([_acc(pred[t], labels[t], dev) for t in range(T)])   # [T, L, G, S]
    best_g = dev_acc.mean(-1).argmax(-1)                                    # [T, L]
    chosen = pred[np.arange(T)[:, None], np.arange(L)[None], best_g]        # [T, L, S, N_e]
    correct = chosen[..., test] == labels[:, None, None, test]              # [T, L, S, N_t]
    acc_seed = correct.mean(-1)                                             # [T, L, S]
    ci = interval(correct.mean(2))                                          # [T, L, 2]
    gain_ci = interval(correct[0].mean(1) - majority_correct)               # [L, 2]
    rows, lambdas, spread = [], [], []
    for k, name in enumerate(names):
        f1 = np.mean([_metrics(chosen[0, k, s][test], labels[0][test])[1]
                      for s in range(chosen.shape[2])])
        acc, cacc = float(acc_seed[0, k].mean()), float(acc_seed[1, k].mean())
        rows.append({"name": name, "dim": int(dims[k]), "accuracy": acc,
                     "accuracy_ci95": ci_list(ci[0, k]),
                     "accuracy_seed_sd": float(acc_seed[0, k].std()),
                     "gain_ci95": ci_list(gain_ci[k]), "f1_macro": float(f1),
                     "control_accuracy": cacc if control_applies else None,
                     "control_accuracy_ci95": ci_list(ci[1, k]) if control_applies else None,
                     "selectivity": acc - cacc if control_applies else None})
        lambdas.append(list(cfg.lambdas[best_g[0, k]]))
        spread.append({"accuracy_std": float(acc_seed[0, k].std()),
                       "control_accuracy_std": float(acc_seed[1, k].std())})
    return rows, lambdas, spread


def convergence_diagnostic(results: dict) -> dict:
    """Flags of probes that did not learn what a converged probe would: layers whose test
    accuracy is below the majority baseline (``below_majority``; ``..._significant`` when the
    whole interval is below it), and an oracle whose interval lies below the best single
    layer's accuracy (the oracle sees every layer, so a converged one is not worse).
    ``ok`` is False when a significant flag is raised."""
    maj = results["majority_accuracy"]
    rows = results["layers"]
    below = [r["name"] for r in rows if r["accuracy"] < maj]
    below_sig = [r["name"] for r in rows if r.get("accuracy_ci95") and
                 r["accuracy_ci95"][1] is not None and r["accuracy_ci95"][1] < maj]
    oracle_below = None
    if "oracle" in results:
        best = max(r["accuracy"] for r in rows)
        hi = results["oracle"]["accuracy_ci95"][1]
        oracle_below = bool(hi is not None and hi < best)
    return {"ok": not below_sig and not oracle_below, "below_majority": below,
            "below_majority_significant": below_sig, "oracle_below_best_layer": oracle_below}


# ----------------------------------------------------------------------------- streaming
def _stream_stats(store: Store, rows: np.ndarray, chunk: int = 4096):
    """Per-layer mean and std over ``rows``, read chunk by chunk from the memory maps."""
    stats = []
    for k in range(store.num_layers):
        arr = store.layer(k)
        s = np.zeros(arr.shape[1]); ss = np.zeros(arr.shape[1])
        for i in range(0, len(rows), chunk):
            x = np.asarray(arr[np.sort(rows[i:i + chunk])], np.float64)
            s += x.sum(0); ss += (x * x).sum(0)
        mu = s / len(rows)
        sd = np.sqrt(np.maximum(ss / len(rows) - mu * mu, 0))
        stats.append((mu.astype(np.float32), np.where(sd > 1e-8, sd, 1).astype(np.float32)))
    return stats


def _stream_rows(store: Store, rows: np.ndarray, stats, dmax: int) -> np.ndarray:
    """Standardised, zero-padded [L, len(rows), dmax] for some store rows."""
    order = np.argsort(rows)
    inv = np.empty_like(order); inv[order] = np.arange(len(order))
    out = np.zeros((store.num_layers, len(rows), dmax), np.float32)
    for k, (mu, sd) in enumerate(stats):
        x = np.asarray(store.layer(k)[rows[order]], np.float32)[inv]
        out[k, :, :x.shape[1]] = (x - mu) / sd
    return out


def layerwise_streaming(store: Store, task: str, cfg: ProbeConfig = DEFAULT, *, seed: int = 0,
                        eval_chunk: int = 2048):
    """Layer-wise task and control probes for stores larger than memory.

    Mini-batches are read from the memory-mapped layers (standardised with streamed train
    statistics); one jitted step updates the probes of every layer at once
    (:func:`~.elastic_net.fit_probe_streaming`). Returns the ``layers`` rows of results.json.
    """
    from speechinterp.probes.elastic_net import fit_probe_streaming, iterate_minibatches

    td = D.prepare_task(store, task, seed)
    dims, names = store.dims, store.layer_names
    dmax = max(dims)
    masks = np.zeros((len(dims), dmax), np.float32)
    for k, d in enumerate(dims):
        masks[k, :d] = 1
    tr_idx = np.flatnonzero(td.split == D.TRAIN)
    stats = _stream_stats(store, td.rows[tr_idx])
    bs = cfg.batch_size or len(tr_idx)
    steps = int(np.ceil(len(tr_idx) / bs))
    labels = {"task": td.y, "control": D.control_labels(td, seed)}

    def predictions(params, which):
        idx = np.flatnonzero(td.split == which)
        out = []
        for i in range(0, len(idx), eval_chunk):
            Xb = jnp.asarray(_stream_rows(store, td.rows[idx[i:i + eval_chunk]], stats, dmax))
            W = params["W"] * jnp.asarray(masks)[:, :, None]
            out.append(np.asarray(jnp.argmax(jnp.einsum("lnd,ldc->lnc", Xb, W)
                                             + params["b"][:, None], -1)))
        return np.concatenate(out, 1), idx

    results = {}
    for name_t, yv in labels.items():
        best = None
        for (l1, l2) in cfg.lambdas:
            def batches(epoch, yv=yv):
                for b in iterate_minibatches(len(tr_idx), bs, seed * 1000 + epoch, cfg.shuffle):
                    sel = tr_idx[b]
                    yield (_stream_rows(store, td.rows[sel], stats, dmax), yv[sel],
                           np.ones(len(sel), np.float32))
            params = fit_probe_streaming(batches, dmax, td.num_classes, masks, l1, l2, steps,
                                         cfg, vmap_axes=1, key=jax.random.PRNGKey(seed))
            pd, di = predictions(params, D.DEV)
            dev = np.mean(pd == yv[di], axis=1)
            if best is None:
                best = (dev, params)
            else:
                upd = dev > best[0]
                best = (np.where(upd, dev, best[0]),
                        jax.tree.map(lambda new, old: jnp.where(
                            upd.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                            params, best[1]))
        pt, ti = predictions(best[1], D.TEST)
        cis = cluster_bootstrap_ci(pt == yv[ti], None if td.groups is None else td.groups[ti],
                                   seed=seed)
        results[name_t] = [_metrics(pt[k], yv[ti]) + (ci_list(cis[k]),)
                           for k in range(len(dims))]
    control = not D.control_is_relabelling(td)
    rows = []
    for k, name in enumerate(names):
        acc, f1, ci = results["task"][k]
        cacc, _, cci = results["control"][k]
        rows.append({"name": name, "dim": dims[k], "accuracy": acc, "accuracy_ci95": ci,
                     "f1_macro": f1, "control_accuracy": cacc if control else None,
                     "control_accuracy_ci95": cci if control else None,
                     "selectivity": acc - cacc if control else None})
    return rows
