"""Percentile bootstrap intervals for accuracies, clustered by speaker (docs/method.md, Statistics).

Utterances of one speaker are not independent: a probe tends to get all of a speaker's
utterances right or all wrong. Resampling utterances then gives intervals that are far too
narrow, so the resampling unit is the cluster (the test speaker, with all of its utterances;
Field & Welsh 2007, "Bootstrapping clustered data"). Every resample is a vector of cluster
counts, and the accuracy of every probe under every resample is one matrix product:

    acc[b, p] = sum_g counts[b, g] * correct[p, g] / sum_g counts[b, g] * size[g]

where ``correct[p, g]`` is probe p's number of correct utterances in cluster g. The same seed
gives the same resamples for every probe, so intervals of probes evaluated on the same rows are
comparable (paired).
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def cluster_counts(num_clusters: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, num_clusters] how often each cluster is drawn in each resample (each draws
    ``num_clusters`` clusters with replacement)."""
    rng = np.random.default_rng([seed, 104729])
    return rng.multinomial(num_clusters, np.full(num_clusters, 1.0 / num_clusters),
                           size=resamples).astype(np.float64)


def resampled_means(values, clusters=None, resamples: int = RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """Bootstrap distribution [..., resamples] of the mean of ``values`` [..., N] over its last
    axis, resampling whole clusters (``clusters`` [N] labels; None: every row its own cluster)."""
    v = np.asarray(values, np.float64)
    n = v.shape[-1]
    if n == 0:
        return np.full(v.shape[:-1] + (resamples,), np.nan)
    if clusters is None:
        ids = np.arange(n)
    else:
        _, ids = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    g = int(ids.max()) + 1
    flat = v.reshape(-1, n)
    sums = np.zeros((g, flat.shape[0]))
    np.add.at(sums, ids, flat.T)                          # [G, P] per-cluster sums
    sizes = np.bincount(ids, minlength=g).astype(np.float64)
    counts = cluster_counts(g, resamples, seed)           # [B, G]
    means = (counts @ sums).T / (counts @ sizes)[None]  # [P, B]
    return means.reshape(v.shape[:-1] + (resamples,))


def cluster_bootstrap_ci(correct, clusters=None, resamples: int = RESAMPLES, seed: int = 0,
                         level: float = LEVEL) -> np.ndarray:
    """Percentile interval [..., 2] of the mean of ``correct`` [..., N] (0/1 per utterance, or
    a seed-averaged fraction), resampling whole clusters (test speakers) when given."""
    dist = resampled_means(correct, clusters, resamples, seed)
    a = (1.0 - level) / 2.0
    return np.stack([np.quantile(dist, a, axis=-1), np.quantile(dist, 1 - a, axis=-1)], -1)


def ci_list(ci) -> list:
    """An interval as a JSON-ready [low, high] of floats (None where undefined)."""
    lo, hi = (float(x) for x in np.asarray(ci).reshape(2))
    return [None if np.isnan(lo) else lo, None if np.isnan(hi) else hi]
