"""The probing protocol of docs/method.md (Linguistic Correlation Analysis, NeuroX), as named
stages over one task's :class:`~.features.TaskArrays`.

:func:`run_probing` reads top to bottom:

1. **layer-wise**: every layer's task and control probes (lambda grid x seeds), trained in one
   :func:`~.engine.train` call next to
2. **the oracle** on all layers side by side (lambda chosen on dev);
3. **ranking**: the neurons ordered by each ranking method (NeuroX weight mass of the oracle by
   default; ``rankings`` adds others, see :data:`RANKINGS`);
4. **subsets**: for every ranking, every minimal-subset candidate (the top-n prefixes, which
   include the top-k% retrains) and the bottom / random k% retrains, in a second engine call;
5. **zero-out**: the trained oracle with all but the selected neurons zeroed;
6. **minimal subset**: the smallest candidate whose dev accuracy reaches the oracle's.

Every accuracy gets a percentile-bootstrap interval clustered by test speaker
(:class:`Intervals`). Returns ``(results, details)``: ``results`` has exactly the keys of
docs/formats.md's ``results.json``; ``details`` holds the rest (chosen lambdas, seed spread,
per-neuron accuracies, devices, timings).
"""
from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from typing import Callable

import numpy as np

from speechinterp.bootstrap import LEVEL, RESAMPLES, ci_list, cluster_bootstrap_ci
from speechinterp.probes import data as D
from speechinterp.probes import engine as E
from speechinterp.probes import ranking as R
from speechinterp.probes import ranking_methods as RM
from speechinterp.probes.elastic_net import DEFAULT, ProbeConfig, setting_name
from speechinterp.probes.features import TaskArrays, engine_order, streams, task_arrays
from speechinterp.store import Store

ABLATION_PCTS = (1, 5, 10, 15, 20, 50)
SELECTIONS = ("top", "random", "bottom")
# ranking methods: NeuroX weight mass of the oracle, the accuracy of each neuron's own probe,
# and the data-only ones of ranking_methods (probeless, IoU, Gaussian intrinsic probe)
RANKINGS = RM.METHODS
# neurons picked greedily by the Gaussian intrinsic probe (the rest by their single gain)
GAUSSIAN_GREEDY = 50


# ----------------------------------------------------------------------------- probe layouts
def layer_probes(dims, l1s, l2s, layers: bool = True, oracle: bool = True) -> E.ProbeSpecs:
    """Call 1 on all layers side by side: for each layer, the task then the control probe for
    every lambda; then the oracle (all columns) for every lambda. Each layer is then one band,
    shared by its probes and the oracle's weights on it."""
    offs = np.cumsum([0] + list(dims))
    G = len(l1s)
    specs = []
    if layers:
        for k, d in enumerate(dims):
            specs.append(E.ProbeSpecs(np.full(2 * G, offs[k]), np.full(2 * G, offs[k] + d),
                                      np.repeat([0, 1], G), np.tile(l1s, 2), np.tile(l2s, 2)))
    if oracle:
        specs.append(E.ProbeSpecs(np.zeros(G), np.full(G, offs[-1]), np.zeros(G), l1s, l2s))
    return E.ProbeSpecs.concat(*specs)


@dataclasses.dataclass(frozen=True)
class SubsetLayout:
    """Call 2's probes on ``[X in ranking 1's order | ... | X in ranking M's order | the
    first max(pct_sizes) columns of a random order]``: per ranking m, every top-n prefix
    (``prefix_ids[m]``, ascending n) and the bottom k% (``bottom_ids[m]``, one per entry of
    ``pct_sizes``); then the random k% (``random_ids``). Nested intervals become a staircase of
    bands (:func:`~.elastic_net.interval_bands`)."""

    specs: E.ProbeSpecs
    prefixes: np.ndarray
    pct_sizes: list
    prefix_ids: list
    bottom_ids: list
    random_ids: np.ndarray

    @property
    def num_cols(self) -> int:
        return int(self.specs.hi.max())


def subset_probes(prefixes, pct_sizes, ntot: int, rankings: int = 1) -> SubsetLayout:
    prefixes = np.asarray(prefixes)
    order = np.argsort(pct_sizes, kind="stable")
    ps = np.asarray(pct_sizes)[order]
    n1, k = len(prefixes), len(ps)
    specs, prefix_ids, bottom_ids, n = [], [], [], 0
    for m in range(rankings):
        o = m * ntot
        specs.append(E.ProbeSpecs(np.r_[np.full(n1, o), o + ntot - ps[::-1]],
                                  np.r_[o + prefixes, np.full(k, o + ntot)],
                                  np.zeros(n1 + k), np.zeros(n1 + k), np.zeros(n1 + k)))
        prefix_ids.append(n + np.arange(n1))
        b = np.empty(k, np.int64)
        b[order[::-1]] = n + n1 + np.arange(k)
        bottom_ids.append(b)
        n += n1 + k
    o = rankings * ntot
    specs.append(E.ProbeSpecs(np.full(k, o), o + ps, np.zeros(k), np.zeros(k), np.zeros(k)))
    random_ids = np.empty(k, np.int64)
    random_ids[order] = n + np.arange(k)
    return SubsetLayout(E.ProbeSpecs.concat(*specs), prefixes, list(pct_sizes), prefix_ids,
                        bottom_ids, random_ids)


def zero_out_predictions(W, b, X, masks) -> np.ndarray:
    """Classes [M, N] of one probe W [D, C], b [C] on X [N, D] with all but the neurons of
    each mask [M, D] zeroed (zero-out ablation; Dalvi et al., AAAI 2019)."""
    M, (Dn, C) = masks.shape[0], W.shape
    Wm = (masks[:, :, None] * W[None]).transpose(1, 0, 2).reshape(Dn, M * C)
    logits = (X @ Wm).reshape(X.shape[0], M, C) + b
    return np.argmax(logits, -1).T


# ----------------------------------------------------------------------------- small helpers
def _acc(pred: np.ndarray, y: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Accuracy over the rows ``sel`` along the last axis of ``pred``."""
    return np.mean(pred[..., sel] == y[sel], axis=-1)


def _metrics(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-F1 (scikit-learn; imported on first use, see :func:`run_probing`)."""
    from sklearn.metrics import accuracy_score, f1_score
    return float(accuracy_score(y, pred)), float(f1_score(y, pred, average="macro"))


@dataclasses.dataclass
class Intervals:
    """95% percentile-bootstrap intervals of accuracies over the test rows, clustered by
    speaker where there is one; the same resamples for every probe of the task."""

    clusters: np.ndarray | None
    seed: int

    def __call__(self, correct: np.ndarray) -> np.ndarray:
        """Intervals [..., 2] of the accuracies given correct [..., num_test]."""
        return cluster_bootstrap_ci(correct, self.clusters, seed=self.seed)

    def describe(self, num_test: int) -> dict:
        c = self.clusters
        return {"method": "percentile bootstrap", "level": LEVEL, "resamples": RESAMPLES,
                "resampled": "test speakers" if c is not None else "test utterances",
                "num_resampled": int(len(np.unique(c)) if c is not None else num_test)}


class Clock:
    """Seconds per stage, into ``timings``."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.t0 = self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.t
        self.t = now

    def total(self) -> None:
        self.timings["total"] = time.perf_counter() - self.t0


# ----------------------------------------------------------------------------- stages
@dataclasses.dataclass
class Oracle:
    """The oracle probe chosen on dev: weights per seed [S] x ([K, C], [C]), test correctness
    per seed [S, N_test], seed-mean macro-F1 and dev accuracy, and its lambdas."""

    weights: list
    correct: np.ndarray
    f1: float
    dev_accuracy: float
    lam: tuple

    def summary(self, interval, majority_correct) -> dict:
        """results.json's ``oracle``: seed-mean test accuracy, its interval, the paired
        interval of its gain over the majority baseline, the seed spread, macro-F1."""
        acc = self.correct.mean(0)                  # per test row, averaged over seeds
        return {"accuracy": float(self.correct.mean()), "accuracy_ci95": ci_list(interval(acc)),
                "gain_ci95": ci_list(interval(acc - majority_correct)),
                "accuracy_seed_sd": float(self.correct.mean(-1).std()), "f1_macro": self.f1}


def layerwise_stage(arrays: TaskArrays, trained: E.Trained, cfg: ProbeConfig, interval,
                    majority_correct):
    """The ``layers`` rows from call 1's layer probes (task and control, lambdas, seeds)."""
    L, G, S = len(arrays.dims), len(cfg.lambdas), trained.job.seeds
    pred = trained.predictions[:, :L * 2 * G]
    pred = pred.reshape(S, L, 2, G, -1).transpose(2, 1, 3, 0, 4)       # [T, L, G, S, N_e]
    labels = arrays.Y[:, arrays.num_train:]
    return layerwise_results(pred, labels, arrays.dev, arrays.test, arrays.names, arrays.dims,
                             cfg, interval, majority_correct,
                             control_applies=not D.control_is_relabelling(arrays.data))


def oracle_stage(arrays: TaskArrays, trained: E.Trained, cfg: ProbeConfig) -> Oracle:
    """The oracle (call 1's last probes, one per lambda): the lambda with the best mean dev
    accuracy over seeds."""
    G, S = len(cfg.lambdas), trained.job.seeds
    first = len(trained.job.specs) - G
    pred = trained.predictions[:, first:]                              # [S, G, N_eval]
    y_e = arrays.y_eval
    g = int(_acc(pred, y_e, arrays.dev).mean(0).argmax())
    weights = [trained.weights(first + g, s) for s in range(S)]
    correct = pred[:, g][:, arrays.test] == arrays.y_test
    f1 = float(np.mean([_metrics(pred[s, g][arrays.test], arrays.y_test)[1]
                        for s in range(S)]))
    return Oracle(weights, correct, f1, float(_acc(pred[:, g], y_e, arrays.dev).mean()),
                  cfg.lambdas[g])


def ranking_stage(arrays: TaskArrays, oracle: Oracle, rankings, cfg: ProbeConfig, *,
                  search_stride: int, seed: int, per_neuron: bool, sample_bytes: float,
                  gaussian_greedy: int = GAUSSIAN_GREEDY):
    """Each ranking method's ordering of all neurons, the stability of the weight-mass
    ranking over seeds, and the per-neuron probes' dev accuracies (or None). The data-only
    methods read the training rows (a random sample of at most ``sample_bytes`` of them when
    the store is streamed)."""
    by_seed = [R.weight_mass_ordering(W, search_stride) for W, _ in oracle.weights]
    orderings = {"weight_mass": by_seed[0][0]}
    stability = R.ranking_stability([o for o, _ in by_seed]) if len(by_seed) > 1 else None
    neuron_dev_acc = None
    if per_neuron or "per_neuron" in rankings:
        neuron_dev_acc = E.neuron_dev_accuracy(arrays, oracle.lam)
        orderings["per_neuron"] = R.accuracy_ordering(neuron_dev_acc)
    data_methods = [m for m in rankings if m in RM.DATA_METHODS]
    if data_methods:
        ntr, K = arrays.num_train, arrays.X.shape[1]
        rows = np.arange(ntr)
        if not arrays.X.in_memory and ntr * K * 4 > sample_bytes:
            rows = np.sort(np.random.default_rng(seed).choice(
                ntr, max(1, int(sample_bytes // (4 * K))), replace=False))
        Xt, yt = arrays.X.rows(rows), arrays.Y[0, rows]
        w = np.ones(len(rows), np.float32)
        for m in data_methods:
            kw = {"k": min(gaussian_greedy, K)} if m == "gaussian" else {}
            orderings[m] = RM.ordering_from_data(m, Xt, yt, w, arrays.num_classes, **kw)
        del Xt
    return ({m: orderings[m] for m in rankings}, by_seed[0][1], stability, neuron_dev_acc)


def subset_stage(arrays: TaskArrays, job: E.Job, layout: SubsetLayout, orderings: dict,
                 plans, lam, seed: int) -> E.Trained:
    """Call 2: every prefix and bottom / random retrain of every ranking, with the oracle's
    lambdas, on the columns in each ranking's order then a random order."""
    ntot = sum(arrays.dims)
    cols = np.concatenate(list(orderings.values())
                          + [R.random_order(ntot, seed)[:max(layout.pct_sizes)]])
    return E.train(job.with_lambdas(*lam), arrays.X.columns(cols), arrays.Y, (plans[0][:1], plans[1][:1]),
                   init_seed=seed + 1)


def zero_out_stage(arrays: TaskArrays, oracle: Oracle, ordering, pcts, seed: int):
    """Test correctness [len(pcts) x 3, N_test] of the trained oracle with all but the top /
    random / bottom k% of ``ordering`` zeroed, and the (selection, pct) keys."""
    keys = [(how, pct) for pct in pcts for how in SELECTIONS]
    ntot = sum(arrays.dims)
    masks = np.zeros((len(keys), ntot), np.float32)
    for i, (how, pct) in enumerate(keys):
        masks[i, R.select(ordering, pct / 100.0, how, seed=seed)] = 1
    W, b = oracle.weights[0]
    rows = arrays.test_rows
    parts = ([rows] if arrays.X.in_memory else arrays.X.chunks(rows))
    pred = np.concatenate([zero_out_predictions(W, b, arrays.X.rows(r), masks) for r in parts],
                          axis=1)
    return pred == arrays.y_test, keys


def ablation_tables(test_acc, test_ci, layout: SubsetLayout, m: int, zero_correct, zero_keys,
                    interval, pcts):
    """The ``ablation`` and ``ablation_ci95`` dicts of ranking ``m``."""
    ids = {"top": layout.prefix_ids[m][np.searchsorted(layout.prefixes, layout.pct_sizes)],
           "bottom": layout.bottom_ids[m], "random": layout.random_ids}
    acc = {mode: {how: {} for how in SELECTIONS} for mode in ("retrain", "zero_out")}
    ci = {mode: {how: {} for how in SELECTIONS} for mode in ("retrain", "zero_out")}
    for how in SELECTIONS:
        for i, pct in enumerate(pcts):
            p = int(ids[how][i])
            acc["retrain"][how][str(pct)] = float(test_acc[p])
            ci["retrain"][how][str(pct)] = ci_list(test_ci[p])
    z_acc, z_ci = zero_correct.mean(-1), interval(zero_correct)
    for i, (how, pct) in enumerate(zero_keys):
        acc["zero_out"][how][str(pct)] = float(z_acc[i])
        ci["zero_out"][how][str(pct)] = ci_list(z_ci[i])
    return acc, ci


def minimal_subset_stage(dev_acc, test_acc, test_ci, sizes, prefixes, target: float):
    """The smallest candidate size whose dev accuracy reaches ``target`` (the last candidate
    when none does): (position among ``sizes``, found, dev, test accuracy, test interval of
    every candidate)."""
    at = np.searchsorted(prefixes, sizes)
    dev_c, test_c, ci_c = dev_acc[at], test_acc[at], test_ci[at]
    hit = np.flatnonzero(dev_c >= target)
    pick = int(hit[0]) if len(hit) else len(sizes) - 1
    return pick, bool(len(hit)), dev_c, test_c, ci_c


# ----------------------------------------------------------------------------- protocol
def run_probing(store: Store, task: str, cfg: ProbeConfig = DEFAULT, *, seed: int = 0,
                seeds: int = 1, delta: float = 0.01, search_stride: int = 100,
                ablation_pcts=ABLATION_PCTS, band_cost: float = 3000.0,
                layerwise_only: bool = False, per_neuron: bool = True,
                rankings=("weight_mass",), memory_budget_gb: float | None = None,
                devices=None, gaussian_greedy: int = GAUSSIAN_GREEDY,
                progress: Callable[[str], None] | None = None):
    """Run the whole protocol of docs/method.md for one task on one store.

    ``rankings``: the ranking methods (:data:`RANKINGS`) whose top / random / bottom ablation
    and minimal subset are computed, all in the same engine call; the first fills
    ``ranking``, ``minimal_subset`` and ``ablation``, the others go under ``by_ranking``
    (same shape), and ``ranking_agreement`` compares them (top-1%/5% overlap, Spearman, chance
    levels; Fan et al., NeurIPS 2023) with their vote.
    ``memory_budget_gb`` streams the store from its files when holding it would exceed the
    budget. ``devices``: the devices to train on (default: all). ``layerwise_only`` stops
    after the layer-wise probes. ``band_cost``: see :func:`~.elastic_net.interval_bands`.

    Longer than our other functions on purpose: it is the protocol's one sequence of named
    stages (each a function of this module), read top to bottom, with both engine calls
    planned before the data loads so that they compile in the background.
    """
    say = progress or (lambda s: None)
    clock = Clock()
    rankings = tuple(rankings)
    unknown = [m for m in rankings if m not in RANKINGS]
    if unknown or not rankings:
        raise ValueError(f"unknown ranking method(s) {unknown}; use {list(RANKINGS)}")
    # scikit-learn's import (~1 s) overlaps the data loading instead of delaying the start
    threading.Thread(target=importlib.import_module, args=("sklearn.metrics",),
                     daemon=True).start()
    td = D.prepare_task(store, task, seed)
    dims, ntot = list(store.dims), sum(store.dims)
    N, ntr, C = len(td.y), int(np.sum(td.split == D.TRAIN)), td.num_classes
    budget = None if memory_budget_gb is None else memory_budget_gb * 2 ** 30
    shape = dict(num_rows=N, num_train=ntr, num_classes=C, cfg=cfg, devices=devices,
                 band_cost=band_cost, precompile=not streams(N, ntot, budget))
    l1s = np.asarray([a for a, _ in cfg.lambdas], np.float32)
    l2s = np.asarray([b for _, b in cfg.lambdas], np.float32)
    # both calls' layouts are known now: they compile in the background while the data loads
    job1 = E.plan(layer_probes(dims, l1s, l2s, oracle=not layerwise_only), num_cols=ntot,
                  seeds=seeds, **shape)
    pct_sizes = [max(1, int(round(p / 100.0 * ntot))) for p in ablation_pcts]
    sizes = R.minimal_subset_sizes(ntot)
    if not layerwise_only:
        layout = subset_probes(np.union1d(sizes, pct_sizes), pct_sizes, ntot, len(rankings))
        job2 = E.plan(layout.specs, num_cols=layout.num_cols, seeds=1, **shape)
    # every seed's mini-batches, drawn in the background while the data loads
    plans = E.submit(E.batch_plans, seed, td.split == D.TRAIN, engine_order(td)[1],
                     seeds=seeds, cfg=cfg)
    arrays = task_arrays(store, td, seed, budget)
    interval = Intervals(arrays.test_clusters, seed)
    majority_correct = arrays.y_test == D.majority_class(td)
    header = task_header(arrays, cfg, interval, majority_correct)
    clock.lap("load")

    say("layer-wise probes")
    plans = plans.result()
    trained1 = E.train(job1, arrays.X, arrays.Y, plans, init_seed=seed)
    layer_rows, layer_lambdas, layer_spread = layerwise_stage(arrays, trained1, cfg, interval,
                                                              majority_correct)
    clock.lap("layerwise")
    details = {"probe_setting": setting_name(cfg), "config": _config(cfg, seeds, seed,
                                                                     search_stride),
               "num_missing_labels": td.num_missing, "layer_lambdas": layer_lambdas,
               "layer_seed_spread": layer_spread, "devices": trained1.devices,
               "streamed": not arrays.X.in_memory, "timings_s": clock.timings}
    if layerwise_only:
        results = {**header, "layers": layer_rows}
        results["convergence"] = convergence_diagnostic(results)
        return results, details

    say("oracle probe")
    oracle = oracle_stage(arrays, trained1, cfg)
    del trained1
    clock.lap("oracle")

    say("ranking")
    orderings, cutoffs, stability, neuron_dev_acc = ranking_stage(
        arrays, oracle, rankings, cfg, search_stride=search_stride, seed=seed,
        per_neuron=per_neuron, sample_bytes=(budget or np.inf) / 4,
        gaussian_greedy=gaussian_greedy)
    clock.lap("ranking")

    say("ablation")
    trained2 = subset_stage(arrays, job2, layout, orderings, plans, oracle.lam, seed)
    pred2 = trained2.predictions[0]                                  # [P2, N_eval]
    correct2 = pred2[:, arrays.test] == arrays.y_test
    test2, ci2 = correct2.mean(-1), interval(correct2)
    clock.lap("ablation")

    say("minimal subset")
    target = oracle.dev_accuracy * (1 - delta)
    per_method = {name: ranking_results(arrays, oracle, layout, m, ordering, pred2, test2, ci2,
                                        sizes, target, delta, ablation_pcts, interval, seed)
                  for m, (name, ordering) in enumerate(orderings.items())}
    clock.lap("minimal_subset")
    clock.total()

    first = per_method[rankings[0]]
    found, dev_c, test_c = first.pop("_candidates")
    results = {**header, "layers": layer_rows,
               "oracle": oracle.summary(interval, majority_correct), **first, "ranking_stability": stability}
    if len(rankings) > 1:
        results["by_ranking"] = {}
        for name in rankings[1:]:
            per_method[name].pop("_candidates")
            results["by_ranking"][name] = per_method[name]
        index = D.neuron_index(dims)
        results["ranking_agreement"] = RM.method_agreement(orderings)
        results["ranking_agreement"]["voted"] = index[RM.voted_ranking(orderings)].tolist()
    results["convergence"] = convergence_diagnostic(results)
    details.update({
        "ranking_methods": list(rankings),
        "oracle_lambda": list(oracle.lam),
        "oracle_dev_accuracy": oracle.dev_accuracy,
        "oracle_seed_accuracy": oracle.correct.mean(-1).tolist(),
        "minimal_subset_found": found,
        "subset_candidates": {"sizes": sizes.tolist(), "dev_accuracy": dev_c.tolist(),
                              "test_accuracy": test_c.tolist()},
        "ranking_cutoffs": cutoffs,
        "ranking_stability": stability,
        "convergence": results["convergence"],
        "devices": sorted(set(details["devices"]) | set(trained2.devices)),
    })
    if neuron_dev_acc is not None:
        details["ranking_by_neuron_accuracy"] = D.neuron_index(dims)[
            R.accuracy_ordering(neuron_dev_acc)].tolist()
        details["neuron_dev_accuracy"] = neuron_dev_acc.tolist()
    return results, details


def ranking_results(arrays: TaskArrays, oracle: Oracle, layout: SubsetLayout, m: int,
                    ordering, pred2, test2, ci2, sizes, target: float, delta: float, pcts,
                    interval, seed: int) -> dict:
    """One ranking's ``ranking``, ``minimal_subset``, ``ablation`` and ``ablation_ci95`` from
    call 2's predictions ``pred2`` [P2, N_eval] (test accuracies ``test2``, intervals ``ci2``),
    and ``_candidates`` (found, dev and test accuracy of every candidate size)."""
    ids = layout.prefix_ids[m]
    dev_p = _acc(pred2[ids], arrays.y_eval, arrays.dev)
    pick, found, dev_c, test_c, ci_c = minimal_subset_stage(dev_p, test2[ids], ci2[ids], sizes,
                                                            layout.prefixes, target)
    zero_correct, zero_keys = zero_out_stage(arrays, oracle, ordering, pcts, seed)
    ablation, ablation_ci = ablation_tables(test2, ci2, layout, m, zero_correct, zero_keys,
                                            interval, pcts)
    index = D.neuron_index(arrays.dims)
    n_min = int(sizes[pick])
    chosen = index[ordering[:n_min]]
    ntot = sum(arrays.dims)
    return {"ranking": index[ordering].tolist(),
            "minimal_subset": {"delta": float(delta), "size": n_min, "fraction": n_min / ntot,
                               "accuracy": float(test_c[pick]),
                               "accuracy_ci95": ci_list(ci_c[pick]),
                               "neurons": chosen.tolist(),
                               "per_layer": {n: int(np.sum(chosen[:, 0] == k))
                                             for k, n in enumerate(arrays.names)}},
            "ablation": ablation, "ablation_ci95": ablation_ci,
            "_candidates": (found, dev_c, test_c)}


def task_header(arrays: TaskArrays, cfg: ProbeConfig, interval: Intervals,
                majority_correct) -> dict:
    """The task-level keys of results.json."""
    td = arrays.data
    return {"task": td.task, "classes": td.classes, "probe_setting": setting_name(cfg),
            "majority_accuracy": D.majority_accuracy(td),
            "majority_accuracy_ci95": ci_list(interval(majority_correct)),
            "split_sizes": td.split_sizes(), "speakers_per_class": D.speakers_per_class(td),
            "interval": interval.describe(len(arrays.y_test))}


def _config(cfg: ProbeConfig, seeds: int, seed: int, search_stride: int) -> dict:
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate, "lr_schedule": cfg.lr_schedule,
            "squared_l2": cfg.squared_l2, "lambdas": [list(l) for l in cfg.lambdas],
            "seeds": seeds, "seed": seed, "search_stride": search_stride}


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


