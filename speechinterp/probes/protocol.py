"""The probing protocol of METHOD.md (Linguistic Correlation Analysis, NeuroX), vectorised.

:func:`run_probing` trains every probe of a task in two jitted calls of
:func:`~.elastic_net.fit_blocks` (probe blocks that share one mini-batch gather per step, and
one matrix product per shared column set; each probe gets exactly :func:`~.elastic_net.fit_probe`'s
updates):

1. layer-wise: labels (task + control) x layers (zero-padded to the widest, with a feature mask)
   x lambda grid x seeds, next to the oracle on all layers concatenated x lambda grid;
2. after the NeuroX ranking of the oracle: every minimal-subset candidate, i.e. the top-n prefix
   of the ranking for every candidate size n (which include the top-k% ablation retrains), and
   the random / bottom k% retrains. The nested prefixes share the ordered columns and differ
   only by their masks; they are split into a few padded buckets chosen by dynamic programming
   (:func:`size_buckets`), so the cost follows the subset sizes while compilations stay few.

Zero-out ablation masks the trained oracle; per-neuron (univariate) probes of every neuron of
every layer are one more vmapped call. The shapes of both training calls are known when the
store is opened, so they are compiled in background threads while the data loads.
:func:`fit_grid` and :func:`fit_layers` (vmapped :func:`~.elastic_net.fit_probe`, probe axis
sharded over local devices) remain for direct use.

:func:`run_probing` returns ``(results, details)``: ``results`` has exactly the keys of DESIGN.md's
``results.json``; ``details`` holds the rest (chosen lambdas, seed spread, per-neuron accuracies,
timings).
"""
from __future__ import annotations

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
from speechinterp.probes import data as D
from speechinterp.probes import ranking as R
from speechinterp.probes.elastic_net import (DEFAULT, Block, ProbeConfig, batch_plan,
                                             fit_blocks_planned, fit_probe, init_blocks,
                                             predict_blocks)
from speechinterp.store import Store

ABLATION_PCTS = (1, 5, 10, 15, 20, 50)
SELECTIONS = ("top", "random", "bottom")


# ----------------------------------------------------------------------------- vmapped fits
def _shard_probes(arrays, n):
    """Pad the leading (probe) axis of ``arrays`` to a multiple of the local device count and
    shard it over a 1-D mesh, so each device trains its share of the probes (DESIGN.md: probe
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
    """One univariate probe per column of X [N, D] -> params with leading axis [D]."""
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


def size_buckets(sizes, max_buckets: int = 4) -> list[np.ndarray]:
    """Split ascending subset ``sizes`` into at most ``max_buckets`` runs of consecutive sizes,
    each padded to its largest, with the least padded work (dynamic programming): nested subsets
    of one ordering then cost ~sum(sizes) instead of len(sizes) * max(sizes)."""
    s = np.asarray(sizes, np.float64)
    n = len(s)
    K = max(1, min(max_buckets, n))
    cost = np.full((K + 1, n + 1), np.inf)
    arg = np.zeros((K + 1, n + 1), np.int64)
    cost[0, 0] = 0
    for k in range(1, K + 1):
        for j in range(1, n + 1):
            c = cost[k - 1, :j] + s[j - 1] * (j - np.arange(j))
            arg[k, j] = int(np.argmin(c))
            cost[k, j] = c[arg[k, j]]
    k = int(np.argmin(cost[1:, n])) + 1
    bounds, j = [], n
    while j > 0:
        i = arg[k, j]
        bounds.append((i, j))
        j, k = i, k - 1
    return [np.arange(i, j) for i, j in reversed(bounds)]


def _nested_blocks(sizes, total: int, l1, l2, max_buckets: int, from_end: bool = False):
    """Blocks training the first (or, ``from_end``, the last) ``sizes[i]`` of ``total`` columns,
    bucketed by :func:`size_buckets`; returns (blocks, [bucket indices])."""
    sizes = np.asarray(sizes)
    blocks, groups = [], size_buckets(sizes, max_buckets)
    for grp in groups:
        width = int(sizes[grp].max())
        j = np.arange(width)[None]
        keep = (j >= width - sizes[grp][:, None]) if from_end else (j < sizes[grp][:, None])
        H = len(grp)
        blocks.append(Block(label=np.zeros(H, np.int32), l1=np.full(H, l1, np.float32),
                            l2=np.full(H, l2, np.float32),
                            mask=keep.astype(np.float32)[None],
                            start=total - width if from_end else 0, width=width))
    return blocks, groups


@functools.partial(jax.jit, static_argnames=("num_classes", "steps_per_epoch", "cfg"))
def fit_eval_blocks(X, Y, w, blocks, idx, valid, params0, X_eval, *, num_classes,
                    steps_per_epoch, cfg):
    """:func:`~.elastic_net.fit_blocks_planned` for every seed's batch plan ``idx``, ``valid``
    [S, steps, batch] and initial parameters ``params0`` (leading axis [S]), and the predicted
    classes on ``X_eval``: (params with a leading [S] axis, classes [S, M, H, N_eval] per
    block)."""
    def one(i, v, p0):
        P = fit_blocks_planned(X, Y, w, blocks, i, v, p0, num_classes=num_classes,
                               steps_per_epoch=steps_per_epoch, cfg=cfg)
        return P, predict_blocks(X_eval, blocks, P)
    if idx.shape[0] == 1:   # one seed: no vmap (a third less tracing)
        out = one(idx[0], valid[0], jax.tree.map(lambda a: a[0], params0))
        return jax.tree.map(lambda a: a[None], out)
    return jax.vmap(one)(idx, valid, params0)


def _initial_params(blocks, num_classes: int, cfg: ProbeConfig, seed: int, seeds: int):
    """Initial parameters of ``blocks`` for each of ``seeds`` seeds (leading axis), drawn on the
    host (:func:`~.elastic_net.init_blocks`)."""
    per_seed = [init_blocks(blocks, num_classes, np.float32, init=cfg.init,
                            rng=np.random.default_rng([seed, s])) for s in range(seeds)]
    return jax.tree.map(lambda *a: np.stack(a), *per_seed)


@functools.partial(jax.jit, static_argnames=("num_train", "cfg"))
def batch_plans(keys, w, *, num_train, cfg):
    """:func:`~.elastic_net.batch_plan` for each key [S]: idx, valid [S, steps, batch]."""
    return jax.vmap(lambda k: batch_plan(k, w, num_train=num_train, cfg=cfg)[:2])(keys)


def _steps_per_epoch(num_train: int, cfg: ProbeConfig) -> int:
    bs = min(cfg.batch_size, num_train) if cfg.batch_size else num_train
    return max(1, -(-num_train // bs))


def _sds_tree(tree):
    return jax.tree.map(lambda a: _sds(np.shape(a), a.dtype), tree)


def _run_blocks(args, statics, compiled=None):
    """Run :func:`fit_eval_blocks`, with the executable compiled ahead of time if given."""
    if compiled is not None:
        return compiled.result()(*args)
    return fit_eval_blocks(*args, **statics)


def _precompile_blocks(args, statics):
    """Compile :func:`fit_eval_blocks` for these arguments' shapes in the background (kept
    for later runs with the same shapes: other tasks of the same store)."""
    if len(jax.local_devices()) > 1:
        return None
    sds = _sds_tree(args)
    leaves, tree = jax.tree.flatten(sds)
    key = ("fit_eval_blocks", tree, tuple((l.shape, str(l.dtype)) for l in leaves),
           tuple(sorted(statics.items())))
    if key not in _AOT:
        if len(_AOT) > 64:   # bound the executables kept alive across many tasks
            _AOT.clear()
        _AOT[key] = _POOL.submit(lambda: fit_eval_blocks.lower(*sds, **statics).compile())
    return _AOT[key]


def _phase2_blocks(sizes, pct_sizes, bottom_random_cols, ntot, l1, l2, max_buckets):
    """Blocks of call 2 on the columns in ranking order: the minimal-subset candidates (first
    ``sizes`` columns, in at most ``max_buckets`` padded groups), and the bottom and random k%
    retrains: two nested families on the column orders ``bottom_random_cols`` [2, n] (the
    ranking reversed, a random permutation), the first ``pct_sizes`` columns of each, sharing
    one block per size group (two groups). Returns (blocks, layout) with layout[i] =
    (kind, indices) for block i, kind "subset" or "bottom_random"."""
    blocks, layout = [], []
    bl, groups = _nested_blocks(sizes, ntot, l1, l2, max_buckets)
    blocks += bl
    layout += [("subset", g) for g in groups]
    order = np.argsort(pct_sizes, kind="stable")
    psorted = np.asarray(pct_sizes)[order]
    for grp in size_buckets(psorted, 2):
        width, H = int(psorted[grp].max()), len(grp)
        keep = (np.arange(width)[None] < psorted[grp][:, None]).astype(np.float32)
        blocks.append(Block(label=np.zeros(H, np.int32), l1=np.full(H, l1, np.float32),
                            l2=np.full(H, l2, np.float32),
                            cols=np.asarray(bottom_random_cols)[:, :width].astype(np.int32),
                            mask=np.broadcast_to(keep, (2, H, width)).copy()))
        layout.append(("bottom_random", order[grp]))
    return blocks, layout


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
                subset_buckets: int = 4, layerwise_only: bool = False,
                per_neuron: bool = True, progress: Callable[[str], None] | None = None):
    """Run the whole protocol of METHOD.md for one task on one store.

    Two jitted calls train everything: (1) the layer-wise task and control probes (lambda grid,
    seeds) next to the oracle on all layers concatenated; (2) after the ranking, every
    minimal-subset candidate (the top-n prefixes, which include the top-k% ablations) and the
    random / bottom ablation retrains. Both are compiled ahead of time while the data loads.
    ``subset_buckets`` bounds the padded groups the nested candidates are split into inside
    call (2). ``layerwise_only`` stops after the layer-wise probes (results then hold task,
    classes, majority_accuracy, split_sizes and layers). Every candidate is trained in the one
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
    y, split = td.y, td.split
    tr, dv, te = split == D.TRAIN, split == D.DEV, split == D.TEST
    ev = np.flatnonzero(dv | te)                  # rows the probes are evaluated on
    dv_e, te_e = dv[ev], te[ev]
    y_e = y[ev]
    ntr, C, L, G = int(tr.sum()), td.num_classes, len(dims), len(cfg.lambdas)
    ntot, dmax = sum(dims), max(dims)
    l1s = np.asarray([a for a, _ in cfg.lambdas], np.float32)
    l2s = np.asarray([b for _, b in cfg.lambdas], np.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    statics = dict(num_classes=C, num_train=ntr, cfg=cfg)
    nb = _steps_per_epoch(ntr, cfg)
    bstat = dict(num_classes=C, steps_per_epoch=nb, cfg=cfg)
    ctrl = D.control_labels(td, seed)
    N = len(y)
    bs = min(cfg.batch_size, ntr) if cfg.batch_size else ntr
    plan_sds = lambda S: (_sds((S, cfg.epochs * nb, bs), jnp.int32),
                          _sds((S, cfg.epochs * nb, bs)))
    init_sds = lambda blocks, S: jax.tree.map(lambda a: _sds((S,) + a.shape),
                                              jax.eval_shape(lambda: init_blocks(blocks, C)))

    # --- the blocks of both calls (shapes only depend on the store), compiled in background
    offs = np.cumsum([0] + dims)
    cols = np.zeros((L, dmax), np.int32)
    lmask = np.zeros((L, 1, dmax), np.float32)
    for k, d in enumerate(dims):
        cols[k, :d] = offs[k] + np.arange(d)
        lmask[k, 0, :d] = 1
    # equal widths: layer k is the k-th run of dmax columns (no gather); else padded gathers
    same = min(dims) == dmax
    layer_block = Block(label=np.repeat(np.arange(2, dtype=np.int32), G), l1=np.tile(l1s, 2),
                        l2=np.tile(l2s, 2), cols=None if same else cols,
                        mask=None if same else lmask, width=dmax, sets=L)
    oracle_block = Block(label=np.zeros(G, np.int32), l1=l1s, l2=l2s, start=0, width=ntot)
    if layerwise_only:
        calls1 = [((layer_block,), seeds)]
    elif seeds == 1:
        calls1 = [((layer_block, oracle_block), 1)]
    else:
        calls1 = [((layer_block,), seeds), ((oracle_block,), 1)]
    w = np.asarray(tr, np.float32)
    Y = np.stack([y, ctrl]).astype(np.int32)
    X_sds, Xe_sds = _sds((N, ntot)), _sds((len(ev), ntot))
    futs1 = [_precompile_blocks((X_sds, Y, w, b) + plan_sds(S) + (init_sds(b, S), Xe_sds), bstat)
             for b, S in calls1]
    sizes = R.minimal_subset_sizes(ntot)
    pct_sizes = [max(1, int(round(p / 100.0 * ntot))) for p in ablation_pcts]
    # top-n prefixes to train: the candidates, and the top-k% retrains (normally among them)
    prefixes = np.union1d(sizes, pct_sizes)
    if not layerwise_only:
        # phase 2 layout; the lambda values are placeholders here (only shapes matter)
        blocks2 = _phase2_blocks(prefixes, pct_sizes, np.zeros((2, ntot), np.int64), ntot,
                                 0.0, 0.0, subset_buckets)[0]
        fut2 = _precompile_blocks((X_sds, Y, w, tuple(blocks2)) + plan_sds(1)
                                  + (init_sds(tuple(blocks2), 1), Xe_sds),
                                  bstat)
    # every family's mini-batches: one plan per seed, shared by all probes of that seed
    # (computed in the background, as the data loads)
    plan = _POOL.submit(lambda: jax.tree.map(np.asarray, batch_plans(
        keys, jnp.asarray(w), num_train=ntr, cfg=cfg)))
    # standardised once, all layers side by side; the layers are column ranges of it
    # (host-side indexing throughout: indexing a jax array would compile a gather)
    Xall = D.load_concatenated(store, td)
    Xall_j, Xe = jnp.asarray(Xall), Xall[ev]
    timings["load"] = time.perf_counter() - t0

    # --- call 1: layer-wise task + control x lambdas x seeds, and the oracle x lambdas
    say("layer-wise probes")
    t = time.perf_counter()
    plan = plan.result()
    outs = [_run_blocks((Xall_j, Y, w, b, plan[0][:S], plan[1][:S],
                         _initial_params(b, C, cfg, seed, S), Xe), bstat, f)
            for (b, S), f in zip(calls1, futs1)]
    pred = np.asarray(outs[0][1][0])                                # [S, L, 2G, N_eval]
    pred = pred.reshape(seeds, L, 2, G, -1).transpose(2, 1, 3, 0, 4)  # [T, L, G, S, N_eval]
    labels = np.stack([y_e, ctrl[ev]])
    dev_acc = np.stack([_acc(pred[t_], labels[t_], dv_e) for t_ in range(2)])   # [T, L, G, S]
    best_g = dev_acc.mean(-1).argmax(-1)                                        # [T, L]
    layer_rows, layer_lambdas, layer_std = [], [], []
    for k, name in enumerate(names):
        accs = {}
        for t_ in range(2):
            g = best_g[t_, k]
            per_seed = [_metrics(pred[t_, k, g, s][te_e], labels[t_][te_e]) for s in range(seeds)]
            accs[t_] = np.array(per_seed)
        acc, f1 = accs[0].mean(0)
        cacc = accs[1][:, 0].mean()
        layer_rows.append({"name": name, "dim": dims[k], "accuracy": float(acc),
                           "f1_macro": float(f1), "control_accuracy": float(cacc),
                           "selectivity": float(acc - cacc)})
        layer_lambdas.append(list(cfg.lambdas[best_g[0, k]]))
        layer_std.append({"accuracy_std": float(accs[0][:, 0].std()),
                          "control_accuracy_std": float(accs[1][:, 0].std())})
    timings["layerwise"] = time.perf_counter() - t
    if layerwise_only:
        return ({"task": task, "classes": td.classes, "majority_accuracy": D.majority_accuracy(td),
                 "split_sizes": td.split_sizes(), "layers": layer_rows},
                {"layer_lambdas": layer_lambdas, "layer_seed_spread": layer_std,
                 "num_missing_labels": td.num_missing, "timings_s": timings})

    # --- oracle: all layers concatenated, the lambda chosen on dev (trained in call 1)
    say("oracle probe")
    t = time.perf_counter()
    Po, pred_o = (outs[0][0][1], outs[0][1][1]) if seeds == 1 else (outs[1][0][0], outs[1][1][0])
    pred_o = np.asarray(pred_o)[0, 0]                                            # [G, N_eval]
    g_o = int(_acc(pred_o, y_e, dv_e).argmax())
    oracle_W, oracle_b = np.asarray(Po["W"])[0, 0, g_o], np.asarray(Po["b"])[0, 0, g_o]
    oracle_acc, oracle_f1 = _metrics(pred_o[g_o][te_e], y_e[te_e])
    oracle_dev = float(_acc(pred_o[g_o], y_e, dv_e))
    lam = cfg.lambdas[g_o]
    del outs, Po
    timings["oracle"] = time.perf_counter() - t

    # --- ranking: NeuroX weight mass over the oracle; per-neuron probe accuracy as a second
    say("ranking")
    t = time.perf_counter()
    ordering, cutoffs = R.weight_mass_ordering(oracle_W, search_stride)
    index = D.neuron_index(dims)
    neuron_dev_acc = None
    if per_neuron:
        Pn = fit_neurons(Xall_j, jnp.asarray(y), jnp.asarray(w), jnp.float32(lam[0]),
                         jnp.float32(lam[1]), keys[0], **statics)
        pn = np.asarray(predict_neurons(Pn["W"], Pn["b"], Xall_j))              # [D, N]
        neuron_dev_acc = _acc(pn, y, dv)
        del Pn, pn
    timings["ranking"] = time.perf_counter() - t

    # --- call 2: every minimal-subset candidate (top-n prefixes of the ordering, which are
    # also the top-k% retrains) and the random / bottom retrains, on the ordered columns
    say("ablation")
    t = time.perf_counter()
    rank_of = np.empty(ntot, np.int64)
    rank_of[ordering] = np.arange(ntot)
    # bottom k%: the last k% of the ranking; random k%: the first k% of one random permutation
    # (nested, as the top k% are); both as column positions in ranking order
    rand_perm = R.random_order(ntot, seed)
    bottom_random = np.stack([np.arange(ntot)[::-1], rank_of[rand_perm]])
    blocks2, layout = _phase2_blocks(prefixes, pct_sizes, bottom_random, ntot, lam[0], lam[1],
                                     subset_buckets)
    X_ord = np.take(Xall, ordering, axis=1)
    out2 = _run_blocks((X_ord, Y, w, tuple(blocks2), plan[0][:1], plan[1][:1],
                        _initial_params(tuple(blocks2), C, cfg, seed + 1, 1), X_ord[ev]),
                       bstat, fut2)
    del X_ord
    preds2 = [np.asarray(p)[0] for p in out2[1]]                   # per block [M, H, N_eval]
    del out2
    dev_p = np.full(len(prefixes), np.nan)
    test_p = np.full(len(prefixes), np.nan)
    retrain = {how: {} for how in SELECTIONS}
    for (kind, ids), p in zip(layout, preds2):
        if kind == "subset":
            p = p.reshape(-1, p.shape[-1])                         # [H, N_eval]
            dev_p[ids], test_p[ids] = _acc(p, y_e, dv_e), _acc(p, y_e, te_e)
            continue
        for how, acc_h in zip(("bottom", "random"), _acc(p, y_e, te_e)):    # [2, H]
            for i, a in zip(ids, acc_h):
                retrain[how][str(ablation_pcts[i])] = float(a)
    for pct, n in zip(ablation_pcts, pct_sizes):
        retrain["top"][str(pct)] = float(test_p[int(np.searchsorted(prefixes, n))])
    at = np.searchsorted(prefixes, sizes)
    dev_c, test_c = dev_p[at], test_p[at]
    # zero-out: the trained oracle with all but the kept neurons' weights zeroed (the same
    # selections as the retrains)
    sel_keys = [(how, pct) for pct in ablation_pcts for how in SELECTIONS]
    sel_masks = np.zeros((len(sel_keys), ntot), np.float32)
    for i, (how, pct) in enumerate(sel_keys):
        sel_masks[i, R.select(ordering, pct / 100.0, how, seed=seed)] = 1
    te_rows = np.flatnonzero(te)
    pred_z = zero_out_predictions(oracle_W, oracle_b, Xall[te_rows], sel_masks)
    ablation = {"retrain": {how: {str(p): retrain[how][str(p)] for p in ablation_pcts}
                            for how in SELECTIONS},
                "zero_out": {how: {} for how in SELECTIONS}}
    for i, (how, pct) in enumerate(sel_keys):
        ablation["zero_out"][how][str(pct)] = float(np.mean(pred_z[i] == y[te_rows]))
    timings["ablation"] = time.perf_counter() - t

    # --- minimal subset: the smallest candidate whose dev accuracy reaches the target
    say("minimal subset")
    t = time.perf_counter()
    target = oracle_dev * (1 - delta)
    hit = np.flatnonzero(dev_c >= target)
    pick = int(hit[0]) if len(hit) else len(sizes) - 1
    n_min = int(sizes[pick])
    chosen = index[ordering[:n_min]]
    per_layer = {name: int(np.sum(chosen[:, 0] == k)) for k, name in enumerate(names)}
    timings["minimal_subset"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    results = {
        "task": task,
        "classes": td.classes,
        "majority_accuracy": D.majority_accuracy(td),
        "split_sizes": td.split_sizes(),
        "layers": layer_rows,
        "oracle": {"accuracy": oracle_acc, "f1_macro": oracle_f1},
        "ranking": index[ordering].tolist(),
        "minimal_subset": {"delta": float(delta), "size": n_min, "fraction": n_min / ntot,
                           "accuracy": float(test_c[pick]), "neurons": chosen.tolist(),
                           "per_layer": per_layer},
        "ablation": ablation,
    }
    details = {
        "config": {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
                   "learning_rate": cfg.learning_rate, "lr_schedule": cfg.lr_schedule,
                   "squared_l2": cfg.squared_l2, "lambdas": [list(l) for l in cfg.lambdas],
                   "seeds": seeds, "seed": seed, "search_stride": search_stride},
        "num_missing_labels": td.num_missing,
        "layer_lambdas": layer_lambdas,
        "layer_seed_spread": layer_std,
        "oracle_lambda": list(lam),
        "oracle_dev_accuracy": oracle_dev,
        "minimal_subset_found": bool(len(hit)),
        "subset_candidates": {"sizes": sizes.tolist(),
                              "dev_accuracy": [None if np.isnan(v) else v for v in dev_c],
                              "test_accuracy": [None if np.isnan(v) else v for v in test_c]},
        "ranking_cutoffs": cutoffs,
        "timings_s": timings,
    }
    if neuron_dev_acc is not None:
        acc_order = R.accuracy_ordering(neuron_dev_acc)
        details["ranking_by_neuron_accuracy"] = index[acc_order].tolist()
        details["neuron_dev_accuracy"] = neuron_dev_acc.tolist()
    return results, details


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
        results[name_t] = [_metrics(pt[k], yv[ti]) for k in range(len(dims))]
    rows = []
    for k, name in enumerate(names):
        acc, f1 = results["task"][k]
        cacc = results["control"][k][0]
        rows.append({"name": name, "dim": dims[k], "accuracy": acc, "f1_macro": f1,
                     "control_accuracy": cacc, "selectivity": acc - cacc})
    return rows
