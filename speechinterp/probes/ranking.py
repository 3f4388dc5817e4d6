"""Neuron rankings and selections (NeuroX ``linear_probe``; Dalvi et al., AAAI 2019)."""
from __future__ import annotations

import numpy as np


def weight_mass_ordering(W: np.ndarray, search_stride: int = 100) -> tuple[np.ndarray, list[int]]:
    """NeuroX ``get_neuron_ordering`` on probe weights ``W`` [D, C].

    For each class c, neurons are sorted by |W[:, c]| and the smallest prefix covering a fraction
    p of that class's weight mass is selected; p grows over ``0, 1/stride, ..., 1`` and neurons
    are appended to the global order the first time any class selects them. NeuroX leaves the
    order inside one step arbitrary (a Python set); here ties within a step are broken by the
    largest per-class share of weight mass. Neurons no class ever selects (zero weight after the
    mass is covered) are appended last, by share. Returns (ordering, cutoffs).
    """
    A = np.abs(np.asarray(W, np.float64))           # [D, C]
    D, C = A.shape
    mass = A.sum(0)                                  # [C]
    step = np.full(D, search_stride + 1, np.int64)   # first step at which each neuron enters
    for c in range(C):
        if mass[c] <= 0:
            continue
        order = np.argsort(-A[:, c], kind="stable")
        cum = np.cumsum(A[order, c])
        before = np.concatenate([[0.0], cum[:-1]])
        # sorted position i is selected at fraction p iff i == 0 or before[i] < mass * p
        # (NeuroX: keep positions up to the first where cum >= mass * p)
        s = np.floor(before / mass[c] * search_stride).astype(np.int64) + 1
        s[0] = 0
        s = np.where(s > search_stride, search_stride + 1, s)
        step[order] = np.minimum(step[order], s)
    share = (A / np.where(mass > 0, mass, 1)).max(1)
    ordering = np.lexsort((-share, step))
    cutoffs = [int(np.sum(step <= p)) for p in range(search_stride + 1)]
    return ordering, cutoffs


def accuracy_ordering(neuron_accuracy: np.ndarray) -> np.ndarray:
    """Neurons by decreasing accuracy of their own univariate probe (ties: lower index first)."""
    acc = np.asarray(neuron_accuracy)
    return np.lexsort((np.arange(len(acc)), -acc))


def random_order(num_neurons: int, seed: int = 0) -> np.ndarray:
    """A random permutation of the neurons; its prefixes are the random selections."""
    return np.random.default_rng(seed).permutation(num_neurons)


def select(ordering: np.ndarray, fraction: float, how: str, seed: int = 0) -> np.ndarray:
    """Indices of the top / bottom / random ``fraction`` of neurons (at least one).

    The random selections of one seed are nested (prefixes of :func:`random_order`), as the
    top and bottom ones are."""
    n = len(ordering)
    k = max(1, int(round(fraction * n)))
    if how == "top":
        return np.asarray(ordering[:k])
    if how == "bottom":
        return np.asarray(ordering[-k:])
    if how == "random":
        return np.sort(random_order(n, seed)[:k])
    raise ValueError(f"unknown selection {how!r}; use top, bottom or random")


def minimal_subset_sizes(num_neurons: int) -> np.ndarray:
    """Candidate subset sizes: 0.1%..10% in 0.1% steps, then 15, 20, ..., 90% (docs/method.md)."""
    fracs = np.concatenate([np.arange(1, 101) / 1000.0, np.arange(15, 95, 5) / 100.0])
    return np.unique(np.maximum(1, np.round(fracs * num_neurons).astype(np.int64)))


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float) -> float:
    """Share of the top ``fraction`` of ordering ``a`` that is also in the top of ``b``."""
    k = max(1, int(round(fraction * len(a))))
    return len(np.intersect1d(a[:k], b[:k])) / k


def ranking_stability(orderings, fractions=(0.01, 0.05)) -> dict:
    """How far rankings from different seeds agree: the mean over seed pairs of the top-1% and
    top-5% overlap, and of the Spearman correlation of the neurons' ranks (docs/method.md: a
    neuron-level claim states it)."""
    from itertools import combinations

    from scipy.stats import spearmanr

    pairs = list(combinations(range(len(orderings)), 2))
    out = {"seeds": len(orderings)}
    for f in fractions:
        out[f"top{round(100 * f):g}_overlap"] = float(np.mean(
            [top_overlap(orderings[i], orderings[j], f) for i, j in pairs]))
    ranks = [np.argsort(o) for o in orderings]
    out["spearman"] = float(np.mean([spearmanr(ranks[i], ranks[j])[0] for i, j in pairs]))
    return out
