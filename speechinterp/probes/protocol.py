"""The probing protocol of METHOD.md (Linguistic Correlation Analysis, NeuroX), vectorised.

Every family of probes is one jitted, vmapped call of :func:`~.elastic_net.fit_probe`:

* layer-wise: labels (task + control) x layers (zero-padded to the widest) x lambda grid x seeds;
* oracle: all layers concatenated x lambda grid;
* per-neuron (univariate) probes: every neuron of every layer;
* ablation (retrain): top / random / bottom x k%; zero-out masks the trained oracle;
* minimal subset: the top-n prefix of the ranking for every candidate size n.

Subset probes gather their columns and are zero-padded (with a feature mask) to the widest
subset of their call. By default subsets are grouped so widths within a call differ at most
``width_factor`` = 4x: the cost then follows the subset sizes and compilations stay few;
``width_factor=inf`` trains all of them in literally one call.

:func:`run_probing` returns ``(results, details)``: ``results`` has exactly the keys of DESIGN.md's
``results.json``; ``details`` holds the rest (chosen lambdas, seed spread, per-neuron accuracies,
timings).
"""
from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from sklearn.metrics import accuracy_score, f1_score

from speechinterp.probes import data as D
from speechinterp.probes import ranking as R
from speechinterp.probes.elastic_net import DEFAULT, ProbeConfig, fit_probe
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
# trains. ``_AOT`` maps (function, argument shapes, statics) to a future compiled executable.
_AOT: dict = {}
_POOL = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2)))


def _aot_key(fn, args, statics):
    shapes = tuple((tuple(a.shape), str(a.dtype)) for a in args)
    return (fn.__name__, shapes, statics["num_classes"], statics["num_train"], statics["cfg"])


def precompile(fn, args, statics) -> None:
    """Start compiling ``fn`` for these argument shapes (ShapeDtypeStructs) in the background."""
    if len(jax.local_devices()) > 1:
        return   # sharded inputs: compiled on first call instead
    key = _aot_key(fn, args, statics)
    if len(_AOT) > 64:   # bound the executables kept alive across many tasks
        _AOT.clear()
    if key not in _AOT:
        _AOT[key] = _POOL.submit(lambda: fn.lower(*args, **statics).compile())


def _call(fn, args, statics):
    fut = _AOT.get(_aot_key(fn, args, statics))
    return fut.result()(*args) if fut is not None else fn(*args, **statics)


def _sds(shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype))


def fit_grid(X, y, w, mask, l1, l2, keys, **statics):
    """Probes for X [N, D], y [T, N] (task + controls), mask [M, D] (subsets), lambdas [G],
    keys [S] -> params with leading axes [T, M, G, S]; the M axis is sharded over devices."""
    M = mask.shape[0]
    (mask,) = _shard_probes([mask], M)
    P = _call(_fit_grid, (X, y, w, mask, l1, l2, keys), statics)
    return jax.tree.map(lambda a: a[:, :M], P)


def fit_layers(X, y, w, mask, l1, l2, keys, **statics):
    """Probes for stacked layers X [L, N, D] with masks [L, D], labels y [T, N], lambdas [G],
    keys [S] -> params with leading axes [T, L, G, S]; the L axis is sharded over devices."""
    L = X.shape[0]
    X, mask = _shard_probes([X, mask], L)
    P = _call(_fit_layers, (X, y, w, mask, l1, l2, keys), statics)
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


@jax.jit
def predict_shared(W, b, X, mask):
    """Classes [M, N] of probes W [M, D, C], b [M, C], masks [M, D] on one X [N, D]."""
    M, Dn, C = W.shape
    Wf = jnp.transpose(W * mask[:, :, None], (1, 0, 2)).reshape(Dn, M * C)
    logits = (X @ Wf).reshape(X.shape[0], M, C) + b[None]
    return jnp.argmax(logits, -1).T


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


def width_groups(widths, factor: float = 2.0) -> list[np.ndarray]:
    """Indices grouped by width (ascending) so that widths in a group differ by <= ``factor``:
    each group is one vmapped call padded to its widest member, so the cost follows the widths
    and the number of compilations stays logarithmic."""
    widths = np.asarray(widths)
    order = np.argsort(widths, kind="stable")
    groups, cur = [], [order[0]]
    for i in order[1:]:
        if widths[i] > factor * widths[cur[0]]:
            groups.append(np.array(cur))
            cur = []
        cur.append(i)
    groups.append(np.array(cur))
    return groups


def fit_columns(X, subsets, y, w, l1, l2, key, statics) -> np.ndarray:
    """Retrain one probe per column subset of X [N, D] in one vmapped call (columns gathered
    and zero-padded to the widest subset, with a feature mask); returns classes [M, N]."""
    width = max(len(s) for s in subsets)
    idx = np.zeros((len(subsets), width), np.int64)
    mask = np.zeros((len(subsets), width), np.float32)
    for i, s in enumerate(subsets):
        idx[i, :len(s)], mask[i, :len(s)] = s, 1
    Xg = jnp.take(X, jnp.asarray(idx).T, axis=1).transpose(2, 0, 1) * jnp.asarray(mask)[:, None]
    P = fit_layers(Xg, jnp.asarray(y)[None], w, jnp.asarray(mask), l1, l2, key[None], **statics)
    return np.asarray(predict_layers(P["W"], P["b"], Xg, jnp.asarray(mask)))[0, :, 0, 0]


def _schedule_compiles(L, N, dmax, ntot, G, S, pcts, width_factor, early_stop, statics):
    """Queue the compilations of every probe family this run will train."""
    f32, i32, u32 = jnp.float32, jnp.int32, jnp.uint32
    common = lambda M, G_, S_: (_sds((N,)), _sds((G_,)), _sds((G_,)), _sds((S_, 2), u32))
    w_, l1_, l2_, k_ = common(0, G, S)
    precompile(_fit_layers, (_sds((L, N, dmax)), _sds((2, N), i32), w_, _sds((L, dmax)), l1_,
                             l2_, k_), statics)
    w_, l1_, l2_, k_ = common(0, G, 1)
    precompile(_fit_grid, (_sds((N, ntot)), _sds((1, N), i32), w_, _sds((1, ntot)), l1_, l2_,
                           k_), statics)
    w_, l1_, l2_, k_ = common(0, 1, 1)
    widths = [max(1, int(round(p / 100.0 * ntot))) for p in pcts for _ in SELECTIONS[1:]]
    for grp in width_groups(widths, width_factor):
        W = max(widths[i] for i in grp)
        precompile(_fit_layers, (_sds((len(grp), N, W)), _sds((1, N), i32), w_,
                                 _sds((len(grp), W)), l1_, l2_, k_), statics)
    sizes = R.minimal_subset_sizes(ntot)
    for n_grp, grp in enumerate(width_groups(sizes, width_factor)):
        if early_stop and n_grp >= 2:
            break
        W = int(sizes[grp].max())
        precompile(_fit_grid, (_sds((N, W)), _sds((1, N), i32), w_, _sds((len(grp), W)), l1_,
                               l2_, k_), statics)


def _acc(pred: np.ndarray, y: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Accuracy over the rows ``sel`` along the last axis of ``pred``."""
    return np.mean(pred[..., sel] == y[sel], axis=-1)


def _metrics(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float(accuracy_score(y, pred)), float(f1_score(y, pred, average="macro"))


# ----------------------------------------------------------------------------- protocol
def run_probing(store: Store, task: str, cfg: ProbeConfig = DEFAULT, *, seed: int = 0,
                seeds: int = 1, delta: float = 0.01, search_stride: int = 100,
                ablation_pcts=ABLATION_PCTS, subset_early_stop: bool = False,
                width_factor: float = 4.0, layerwise_only: bool = False,
                per_neuron: bool = True, progress: Callable[[str], None] | None = None):
    """Run the whole protocol of METHOD.md for one task on one store.

    ``layerwise_only`` stops after the layer-wise probes (results then hold task, classes,
    majority_accuracy, split_sizes and layers). ``subset_early_stop`` stops the minimal-subset search after the first width group that
    reaches the target (same chosen subset, fewer candidates trained, as a sequential search).
    """
    say = progress or (lambda s: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    td = D.prepare_task(store, task, seed)
    layers = D.load_layers(store, td)
    dims = [a.shape[1] for a in layers]
    names = store.layer_names
    y, split = td.y, td.split
    tr, dv, te = split == D.TRAIN, split == D.DEV, split == D.TEST
    w = jnp.asarray(tr.astype(np.float32))
    ntr, C = int(tr.sum()), td.num_classes
    l1 = jnp.asarray([a for a, _ in cfg.lambdas], jnp.float32)
    l2 = jnp.asarray([b for _, b in cfg.lambdas], jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    statics = dict(num_classes=C, num_train=ntr, cfg=cfg)
    ctrl = D.control_labels(td, seed)
    ntot_ = sum(dims)
    _schedule_compiles(len(layers), len(y), max(dims), ntot_, len(cfg.lambdas), seeds,
                       ablation_pcts, width_factor, subset_early_stop, statics)
    timings["load"] = time.perf_counter() - t0

    # --- layer-wise, task + control, lambdas, seeds: one call
    say("layer-wise probes")
    t = time.perf_counter()
    Xs, masks = D.stack_padded(layers)
    Y = jnp.asarray(np.stack([y, ctrl]))
    P = fit_layers(jnp.asarray(Xs), Y, w, jnp.asarray(masks), l1, l2, keys, **statics)
    # predictions [T, L, G, S, N]
    pred = np.asarray(predict_layers(P["W"], P["b"], jnp.asarray(Xs), jnp.asarray(masks)))
    labels = np.stack([y, ctrl])
    dev_acc = np.stack([_acc(pred[t_], labels[t_], dv) for t_ in range(2)])   # [T, L, G, S]
    best_g = dev_acc.mean(-1).argmax(-1)                                        # [T, L]
    layer_rows, layer_lambdas, layer_std = [], [], []
    for k, name in enumerate(names):
        accs = {}
        for t_ in range(2):
            g = best_g[t_, k]
            per_seed = [_metrics(pred[t_, k, g, s][te], labels[t_][te]) for s in range(seeds)]
            accs[t_] = np.array(per_seed)
        acc, f1 = accs[0].mean(0)
        cacc = accs[1][:, 0].mean()
        layer_rows.append({"name": name, "dim": dims[k], "accuracy": float(acc),
                           "f1_macro": float(f1), "control_accuracy": float(cacc),
                           "selectivity": float(acc - cacc)})
        layer_lambdas.append(list(cfg.lambdas[best_g[0, k]]))
        layer_std.append({"accuracy_std": float(accs[0][:, 0].std()),
                          "control_accuracy_std": float(accs[1][:, 0].std())})
    del P, pred, Xs
    timings["layerwise"] = time.perf_counter() - t
    if layerwise_only:
        return ({"task": task, "classes": td.classes, "majority_accuracy": D.majority_accuracy(td),
                 "split_sizes": td.split_sizes(), "layers": layer_rows},
                {"layer_lambdas": layer_lambdas, "layer_seed_spread": layer_std,
                 "num_missing_labels": td.num_missing, "timings_s": timings})

    # --- oracle: all layers concatenated, lambda grid in one call
    say("oracle probe")
    t = time.perf_counter()
    Xall = jnp.asarray(np.concatenate(layers, axis=1))
    ntot = Xall.shape[1]
    full = jnp.ones((1, ntot), jnp.float32)
    Po = fit_grid(Xall, jnp.asarray(y)[None], w, full, l1, l2, keys[:1], **statics)
    Po = jax.tree.map(lambda a: a[0, 0, :, 0], Po)                             # [G, ...]
    pred_o = np.asarray(predict_shared(Po["W"], Po["b"], Xall, jnp.broadcast_to(full, (len(cfg.lambdas), ntot))))          # [G, N]
    g_o = int(_acc(pred_o, y, dv).argmax())
    oracle_W, oracle_b = np.asarray(Po["W"][g_o]), np.asarray(Po["b"][g_o])
    oracle_acc, oracle_f1 = _metrics(pred_o[g_o][te], y[te])
    oracle_dev = float(_acc(pred_o[g_o], y, dv))
    lam = cfg.lambdas[g_o]
    l1o, l2o = jnp.asarray([lam[0]], jnp.float32), jnp.asarray([lam[1]], jnp.float32)
    timings["oracle"] = time.perf_counter() - t

    # --- ranking: NeuroX weight mass over the oracle; per-neuron probe accuracy as a second
    say("ranking")
    t = time.perf_counter()
    ordering, cutoffs = R.weight_mass_ordering(oracle_W, search_stride)
    index = D.neuron_index(dims)
    neuron_dev_acc = None
    if per_neuron:
        Pn = fit_neurons(Xall, jnp.asarray(y), w, l1o[0], l2o[0], keys[0], **statics)
        pn = np.asarray(predict_neurons(Pn["W"], Pn["b"], Xall))              # [D, N]
        neuron_dev_acc = _acc(pn, y, dv)
        del Pn, pn
    timings["ranking"] = time.perf_counter() - t

    # --- ablation: top / random / bottom k%, retrain (one call) and zero-out (one call)
    say("ablation")
    t = time.perf_counter()
    sels, sel_keys = [], []
    for pct in ablation_pcts:
        for how in SELECTIONS:
            sels.append(R.select(ordering, pct / 100.0, how, seed=seed + pct))
            sel_keys.append((how, pct))
    sel_masks = np.zeros((len(sels), ntot), np.float32)
    for i, idx in enumerate(sels):
        sel_masks[i, idx] = 1
    # "top k%" retrains are minimal-subset candidates (the same top-n prefixes): they are read
    # from that stage below; random and bottom are trained here
    rest = [i for i, (how, _) in enumerate(sel_keys) if how != "top"]
    pred_r = {}
    for grp in width_groups([len(sels[i]) for i in rest], width_factor):
        ids = [rest[i] for i in grp]
        for i, p in zip(ids, fit_columns(Xall, [sels[i] for i in ids], y, w, l1o, l2o, keys[0],
                                         statics)):
            pred_r[i] = p
    M = len(sels)
    sel_masks = jnp.asarray(sel_masks)
    pred_z = np.asarray(predict_shared(jnp.broadcast_to(oracle_W, (M,) + oracle_W.shape),
                                       jnp.broadcast_to(oracle_b, (M,) + oracle_b.shape),
                                       Xall, sel_masks))
    ablation = {mode: {how: {} for how in SELECTIONS} for mode in ("retrain", "zero_out")}
    for i, (how, pct) in enumerate(sel_keys):
        ablation["retrain"][how][str(pct)] = (float(_acc(pred_r[i], y, te)) if i in pred_r
                                              else None)
        ablation["zero_out"][how][str(pct)] = float(_acc(pred_z[i], y, te))
    del pred_z
    timings["ablation"] = time.perf_counter() - t

    # --- minimal subset: every candidate size, prefix masks of the ordering
    say("minimal subset")
    t = time.perf_counter()
    sizes = R.minimal_subset_sizes(ntot)
    dev_c = np.full(len(sizes), np.nan)
    test_c = np.full(len(sizes), np.nan)
    target = oracle_dev * (1 - delta)
    Xord = Xall[:, jnp.asarray(ordering)]
    for grp in width_groups(sizes, width_factor):
        # nested prefixes share one X (no per-candidate copy): prefix masks select the columns
        width = int(sizes[grp].max())
        Xw = Xord[:, :width]
        pm = jnp.asarray((np.arange(width)[None] < sizes[grp][:, None]).astype(np.float32))
        Ps = fit_grid(Xw, jnp.asarray(y)[None], w, pm, l1o, l2o, keys[:1], **statics)
        Ps = jax.tree.map(lambda a: a[0, :, 0, 0], Ps)
        pred = np.asarray(predict_shared(Ps["W"], Ps["b"], Xw, pm))
        dev_c[grp], test_c[grp] = _acc(pred, y, dv), _acc(pred, y, te)
        if subset_early_stop and np.any(dev_c[grp] >= target):
            break
    for i, (how, pct) in enumerate(sel_keys):
        if how == "top":
            j = int(np.searchsorted(sizes, len(sels[i])))
            if j < len(sizes) and sizes[j] == len(sels[i]) and not np.isnan(test_c[j]):
                ablation["retrain"]["top"][str(pct)] = float(test_c[j])
            else:   # not trained by an early-stopped subset search
                p = fit_columns(Xall, [sels[i]], y, w, l1o, l2o, keys[0], statics)[0]
                ablation["retrain"]["top"][str(pct)] = float(_acc(p, y, te))
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
                for b in iterate_minibatches(len(tr_idx), bs, seed * 1000 + epoch):
                    sel = tr_idx[b]
                    yield (_stream_rows(store, td.rows[sel], stats, dmax), yv[sel],
                           np.ones(len(sel), np.float32))
            params = fit_probe_streaming(batches, dmax, td.num_classes, masks, l1, l2, steps,
                                         cfg, vmap_axes=1)
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
