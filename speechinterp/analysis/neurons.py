"""Across-property neuron analyses: overlap of salient neurons and redundancy (docs/method.md).

Overlap follows the paper's shared-neuron counts; redundancy follows NeuroX ``clustering.py``
(correlation clustering of neurons, Dalvi et al. 2020) and the top-vs-random ablation gap.
"""
from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform


def salient_set(results: dict, how: str = "minimal_subset", top: int | None = None) -> set:
    """Salient neurons of one task's results.json as a set of (layer, neuron)."""
    if how == "minimal_subset":
        return {tuple(n) for n in results["minimal_subset"]["neurons"]}
    if how == "top":
        return {tuple(n) for n in results["ranking"][:top]}
    raise ValueError(f"unknown salient set {how!r}")


def overlap_matrix(sets: dict[str, set]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, shared counts [P, P], Jaccard [P, P]) between properties' salient neuron sets."""
    names = list(sets)
    P = len(names)
    shared = np.zeros((P, P), np.int64)
    jac = np.zeros((P, P))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            inter = len(sets[a] & sets[b])
            union = len(sets[a] | sets[b])
            shared[i, j] = inter
            jac[i, j] = inter / union if union else 0.0
    return names, shared, jac


def correlation_clusters(X: np.ndarray, threshold: float = 0.5, use_abs: bool = True,
                         method: str = "average") -> np.ndarray:
    """Cluster id of each neuron (column of X [N, D]) by hierarchical clustering on the
    correlation distance 1 - |corr| (NeuroX ``create_correlation_clusters``)."""
    X = np.asarray(X, np.float64)
    sd = X.std(0)
    corr = np.corrcoef(X[:, sd > 0], rowvar=False) if np.sum(sd > 0) > 1 else np.ones((1, 1))
    corr = np.nan_to_num(np.atleast_2d(corr))
    dist = 1 - (np.abs(corr) if use_abs else corr)
    np.fill_diagonal(dist, 0)
    dist = np.clip((dist + dist.T) / 2, 0, None)
    ids = np.zeros(X.shape[1], np.int64)
    live = np.flatnonzero(sd > 0)
    if len(live) > 1:
        Z = hierarchy.linkage(squareform(dist, checks=False), method=method)
        ids[live] = hierarchy.fcluster(Z, t=threshold, criterion="distance")
    elif len(live) == 1:
        ids[live] = 1
    dead = np.flatnonzero(sd == 0)   # constant neurons: each its own cluster
    ids[dead] = ids.max() + 1 + np.arange(len(dead))
    return ids


def redundancy(X: np.ndarray, threshold: float = 0.5) -> dict:
    """How many correlation clusters the neurons of X form: fewer clusters = more redundancy."""
    ids = correlation_clusters(X, threshold)
    n_clusters = int(len(np.unique(ids)))
    return {"neurons": int(X.shape[1]), "clusters": n_clusters,
            "redundant_fraction": 1 - n_clusters / max(X.shape[1], 1)}


def top_random_gap(results: dict, mode: str = "retrain") -> dict[str, float]:
    """Accuracy(top k%) - accuracy(random k%) per k: small gaps mean redundant information."""
    ab = results["ablation"][mode]
    return {k: ab["top"][k] - ab["random"][k] for k in ab["top"]}


def salient_overlap(probes: dict) -> dict:
    """``{"names", "shared", "jaccard"}``: the overlap of the minimal subsets of several
    properties' probe results (property -> results.json) of one encoder."""
    names, shared, jac = overlap_matrix({p: salient_set(r) for p, r in probes.items()})
    return {"names": names, "shared": shared.tolist(), "jaccard": jac.tolist()}


def store_redundancy(store, max_neurons: int = 4000, seed: int = 0) -> dict:
    """:func:`redundancy` of every neuron of a store, all layers side by side; above
    ``max_neurons`` a fixed random sample of them (hierarchical clustering is O(D^2))."""
    X = np.concatenate([np.asarray(store.layer(k), np.float32)
                        for k in range(store.num_layers)], 1)
    if X.shape[1] > max_neurons:
        X = X[:, np.random.default_rng(seed).choice(X.shape[1], max_neurons, replace=False)]
    return redundancy(X)
