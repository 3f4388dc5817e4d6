"""Neuron rankings from the data alone, their agreement, and a vote between them.

Every method reads ``X [N, D]``: every neuron of every layer side by side, already standardised
by the caller as the probes are (zero mean, unit variance on the train rows); integer labels
``y [N]`` in ``0..num_classes-1``; and row weights ``w [N]`` (1: a train row, 0: excluded; a row
with weight 0 affects no score, whatever its values or label). Classes without a train row are
left out. The work is vectorised over all neurons and chunked over them (``_BLOCK_ELEMENTS``
floats per block), so memory stays bounded at D = 25,000, N = 20,000, C = 1,251.

* :func:`probeless_scores`: Antverg & Belinkov (ICLR 2022), no probe at all.
* :func:`iou_scores`: Na et al. (ICLR 2019), overlap of a neuron's top activations with a class.
* :func:`gaussian_ordering`: Torroba Hennigen, Williams & Cotterell (EMNLP 2020), greedy
  selection under a shared-covariance Gaussian (LDA) intrinsic probe.
* :func:`method_agreement` and :func:`voted_ranking` (Fan et al., NeurIPS 2023) compare and
  combine any orderings, these and the probe-based ones of :mod:`speechinterp.probes.ranking`.

An ordering is an array of neuron indices, best first; scores tie-break to the lower index.
"""
from __future__ import annotations

import functools
from itertools import combinations

import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.probes.ranking import top_overlap

METHODS = ("weight_mass", "per_neuron", "probeless", "iou", "gaussian")
DATA_METHODS = ("probeless", "iou", "gaussian")
_BLOCK_ELEMENTS = 1 << 24      # floats in one [rows, neurons] block (64 MB in float32)


def ordering_from_scores(scores: np.ndarray) -> np.ndarray:
    """Neurons by decreasing score, ties to the lower index."""
    scores = np.asarray(scores)
    return np.lexsort((np.arange(len(scores)), -scores))


def ordering_from_data(method: str, X, y, w, num_classes: int, **kw) -> np.ndarray:
    """The ordering of one data-only method (``probeless``, ``iou``, ``gaussian``); ``kw`` goes
    to it. ``weight_mass`` and ``per_neuron`` need a trained probe: see
    :func:`speechinterp.probes.ranking.weight_mass_ordering` and ``accuracy_ordering``."""
    if method == "probeless":
        return probeless_ordering(X, y, w, num_classes, **kw)
    if method == "iou":
        return ordering_from_scores(iou_scores(X, y, w, num_classes, **kw))
    if method == "gaussian":
        return gaussian_ordering(X, y, w, num_classes, **kw)
    if method in METHODS:
        raise ValueError(f"ranking method {method!r} needs a trained probe, not only data; "
                         f"ordering_from_data takes {', '.join(DATA_METHODS)}")
    raise ValueError(f"unknown ranking method {method!r}; use one of {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------------
# rows, classes and neuron blocks

class _Rows:
    """The rows with weight > 0, their weights and their labels renumbered over the classes
    that have such a row (``num_present`` of them)."""

    def __init__(self, y, w, num_classes: int):
        y, w = np.asarray(y), np.asarray(w, np.float64)
        if y.shape != w.shape or y.ndim != 1:
            raise ValueError(f"labels {y.shape} and row weights {w.shape} must be one "
                             "vector each, of the same length")
        self.index = np.flatnonzero(w > 0)
        labels = y[self.index]
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} weighted rows have a label outside "
                             f"0..{num_classes - 1} (first: row {int(self.index[bad][0])}, "
                             f"label {labels[bad][0]})")
        self.present = np.unique(labels)
        self.num_present = len(self.present)
        self.renumber = np.full(num_classes, -1, np.int64)
        self.renumber[self.present] = np.arange(self.num_present)
        self.labels = self.renumber[labels].astype(np.int32)
        self.weights = w[self.index]
        self.class_mass = np.bincount(self.labels, self.weights, self.num_present)


def _width(num_rows: int, num_neurons: int) -> int:
    return int(max(1, min(num_neurons, _BLOCK_ELEMENTS // max(1, num_rows))))


def _blocks(X, rows: np.ndarray, width: int):
    """(start, stop, float32 block [len(rows), width]) over the neurons; the last block is
    zero-padded to ``width`` so that one compiled program serves every block."""
    num_neurons = X.shape[1]
    every_row = len(rows) == X.shape[0]
    for start in range(0, num_neurons, width):
        stop = min(num_neurons, start + width)
        block = np.asarray(X[:, start:stop] if every_row else X[rows, start:stop], np.float32)
        if stop - start < width:
            block = np.pad(block, ((0, 0), (0, width - (stop - start))))
        yield start, stop, block


def _per_neuron(kernel, X, rows: _Rows, *args, **statics) -> np.ndarray:
    width = _width(len(rows.index), X.shape[1])
    out = np.empty(X.shape[1], np.float64)
    for start, stop, block in _blocks(X, rows.index, width):
        out[start:stop] = np.asarray(kernel(block, *args, **statics))[:stop - start]
    return out


# ---------------------------------------------------------------------------------------------
# probeless

@functools.partial(jax.jit, static_argnames=("num_classes",))
def _probeless_block(block, labels, weights, class_mass, *, num_classes):
    means = jax.ops.segment_sum(block * weights[:, None], labels, num_classes) / class_mass[:, None]
    # sum over pairs i < j of |a_j - a_i| for sorted a: a_(i) enters i times with + and
    # C - 1 - i times with -
    coefficient = 2 * jnp.arange(num_classes, dtype=block.dtype) - num_classes + 1
    return coefficient @ jnp.sort(means, axis=0)


def probeless_scores(X, y, w, num_classes: int) -> np.ndarray:
    """Probeless ranking (Antverg & Belinkov, "On the pitfalls of analyzing individual neurons
    in language models", ICLR 2022): a neuron's score is ``sum_{c < c'} |mean_c - mean_c'|`` of
    its activation over the train rows of each class, computed as ``sum_i a_(i) (2i - C + 1)``
    over its sorted class means (O(C log C) per neuron, not O(C^2)). ``X`` standardised, as the
    probes see it, so that scores compare across neurons. Returns scores [D]."""
    rows = _Rows(y, w, num_classes)
    args = (jnp.asarray(rows.labels), jnp.asarray(rows.weights, jnp.float32),
            jnp.asarray(rows.class_mass, jnp.float32))
    return _per_neuron(_probeless_block, X, rows, *args, num_classes=rows.num_present)


def probeless_ordering(X, y, w, num_classes: int) -> np.ndarray:
    """Neurons by decreasing :func:`probeless_scores`."""
    return ordering_from_scores(probeless_scores(X, y, w, num_classes))


# ---------------------------------------------------------------------------------------------
# IoU

def _quantile_rows(block: np.ndarray, quantile: float) -> np.ndarray:
    """np.quantile(block, quantile, axis=0) (linear interpolation) by partial sorting."""
    position = quantile * (len(block) - 1)
    lo, hi = int(np.floor(position)), int(np.ceil(position))
    part = np.partition(block, sorted({lo, hi}), axis=0)
    return part[lo] + (position - lo) * (part[hi] - part[lo])


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _iou_block(block, threshold, labels, weights, class_mass, *, num_classes):
    active = (block > threshold).astype(block.dtype) * weights[:, None]
    intersection = jax.ops.segment_sum(active, labels, num_classes)   # [C, B]
    union = active.sum(0)[None] + class_mass[:, None] - intersection
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1), 0).max(0)


def iou_scores(X, y, w, num_classes: int, quantile: float = 0.95) -> np.ndarray:
    """IoU ranking (Na et al., "Discovery of natural language concepts in individual units of
    CNNs", ICLR 2019; NeuroX master's IoU ranking): a neuron is active on the train rows where it
    exceeds its own ``quantile`` (linear interpolation over the train rows, unweighted); its
    score is the best over classes of IoU(active rows, rows of the class), the sizes counted in
    row weight. Returns scores [D] in [0, 1]."""
    rows = _Rows(y, w, num_classes)
    args = (jnp.asarray(rows.labels), jnp.asarray(rows.weights, jnp.float32),
            jnp.asarray(rows.class_mass, jnp.float32))
    width = _width(len(rows.index), X.shape[1])
    out = np.empty(X.shape[1], np.float64)
    for start, stop, block in _blocks(X, rows.index, width):
        # (a sort on the host: jnp.quantile's XLA sort is several times slower on CPU)
        threshold = _quantile_rows(block, quantile)
        out[start:stop] = np.asarray(_iou_block(block, threshold, *args,
                                                num_classes=rows.num_present))[:stop - start]
    return out


# ---------------------------------------------------------------------------------------------
# Gaussian (LDA) greedy selection

@functools.partial(jax.jit, static_argnames=("num_classes",))
def _moments_block(block, labels, weights, class_mass, *, num_classes):
    means = jax.ops.segment_sum(block * weights[:, None], labels, num_classes) / class_mass[:, None]
    return means, weights @ (block * block)


@functools.partial(jax.jit, static_argnames=("row_block", "with_accuracy"))
def _lda_candidates(residual, class_residual, schur, logits, labels, weights, *, row_block,
                    with_accuracy):
    """Label log-likelihood and correct count, summed over rows, of the selected set plus each
    candidate; ``residual`` [blocks, rows, width], ``class_residual`` [blocks, C, width],
    ``schur`` [blocks, width]. The logits on A + j are ``logits - (r_j - m_cj)^2 / (2 s_j)``;
    the r_j^2 term is the same for every class and cancels in the softmax, which leaves
    ``logits + r_j m_cj / s_j - m_cj^2 / (2 s_j)``."""
    n = residual.shape[1]
    split = lambda a: a.reshape((n // row_block, row_block) + a.shape[1:])
    parts = (split(logits), split(labels), split(weights))

    def block(args):
        r_block, m, s = args
        slope, offset = m / s, -0.5 * m * m / s                   # [C, width]

        def rows(part):
            r, (base, label, weight) = part
            candidate = base[:, :, None] + r[:, None, :] * slope + offset   # [rb, C, width]
            own = jnp.take_along_axis(candidate, label[:, None, None], axis=1)[:, 0]
            loglik = weight @ (own - jax.nn.logsumexp(candidate, axis=1))
            if not with_accuracy:
                return loglik, loglik
            correct = (jnp.argmax(candidate, axis=1) == label[:, None]).astype(r.dtype)
            return loglik, weight @ correct

        loglik, correct = jax.lax.map(rows, (split(r_block), parts))
        return loglik.sum(0), correct.sum(0)

    return jax.lax.map(block, (residual, class_residual, schur))


@functools.partial(jax.jit, donate_argnums=0)
def _rank1_update(residual, z, g):
    return residual - z[None, :, None] * g[:, None, :]


class _GaussianSelection:
    """A shared-covariance Gaussian class model on a growing set A of neurons, with what adding
    any candidate j costs kept for all j at once (S is the pooled within-class covariance plus
    ``ridge`` on its diagonal, L L^T = S_AA its Cholesky factor):

    * ``gain_rows`` G = L^-1 S_A,: [|A|, D]; ``schur`` s_j = S_jj - |G_:j|^2, the Schur
      complement of S_AA in S_{A+j};
    * ``residual`` r_j(x) = x_j - S_jA S_AA^-1 x_A on the evaluation rows (float32, in column
      blocks [blocks, rows, width]), and ``class_residual`` m_cj = mu_cj - S_jA S_AA^-1 mu_cA;
    * ``logits`` log pi_c - 1/2 (x_A - mu_cA)^T S_AA^-1 (x_A - mu_cA) [rows, C].

    By the Schur complement the logits on A + j are ``logits - (r_j - m_cj)^2 / (2 s_j)``, so one
    pass scores every candidate; adding a neuron is a rank-1 update of each of these.
    """

    def __init__(self, X, y, w, num_classes, w_eval, ridge):
        self.X, self.ridge = X, ridge
        self.fit = _Rows(y, w, num_classes)
        num_present, total = self.fit.num_present, self.fit.weights.sum()
        self.priors = self.fit.class_mass / total
        args = (jnp.asarray(self.fit.labels), jnp.asarray(self.fit.weights, jnp.float32),
                jnp.asarray(self.fit.class_mass, jnp.float32))
        D = self.num_neurons = X.shape[1]
        self.means = np.empty((num_present, D))
        second = np.empty(D)
        for start, stop, block in _blocks(X, self.fit.index, _width(len(self.fit.index), D)):
            m, s2 = _moments_block(block, *args, num_classes=num_present)
            self.means[:, start:stop] = np.asarray(m)[:, :stop - start]
            second[start:stop] = np.asarray(s2)[:stop - start]
        self.total = total
        self.schur = second / total - self.priors @ self.means ** 2 + ridge
        self.gain_rows = np.zeros((0, D))

        # evaluation rows (rows of a class without train rows cannot be scored: left out)
        if w_eval is None:
            index, labels, weights = self.fit.index, self.fit.labels, self.fit.weights
        else:
            ev = _Rows(y, w_eval, num_classes)
            labels = self.fit.renumber[ev.present][ev.labels]
            keep = labels >= 0
            index, labels, weights = ev.index[keep], labels[keep], ev.weights[keep]
        self.eval_weight = weights.sum()
        # candidates in column blocks of ``width``, rows in blocks of [rows, C, width] ~ 2^20
        self.width = int(min(D, 2048))
        self.num_blocks = -(-D // self.width)
        self.row_block = int(max(1, min(len(index), (1 << 20) // (num_present * self.width))))
        rows = len(index) + (-len(index) % self.row_block)
        self.labels = np.pad(labels, (0, rows - len(index))).astype(np.int32)
        self.weights = np.pad(weights, (0, rows - len(index))).astype(np.float32)
        residual = np.zeros((self.num_blocks, rows, self.width), np.float32)
        for start, stop, block in _blocks(X, index, self.width):
            residual[start // self.width, :len(index)] = block
        self.residual = jnp.asarray(residual)
        del residual
        self.class_residual = self.means.copy()
        self.logits = np.tile(np.log(self.priors), (rows, 1))
        self.selected: list[int] = []

    def _blocked(self, a: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """[..., D] -> [blocks, ..., width] float32, padded with ``fill``."""
        pad = self.num_blocks * self.width - self.num_neurons
        a = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)], constant_values=fill)
        return np.moveaxis(a.reshape(a.shape[:-1] + (self.num_blocks, self.width)), -2, 0
                           ).astype(np.float32)

    def loglik(self) -> float:
        """Mean label log-likelihood of the evaluation rows under the current set."""
        L = self.logits
        top = L.max(1, keepdims=True)
        lse = (top + np.log(np.exp(L - top).sum(1, keepdims=True)))[:, 0]
        own = L[np.arange(len(L)), self.labels]
        return float(self.weights @ (own - lse) / self.eval_weight)

    def candidates(self, with_accuracy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Mean label log-likelihood and accuracy on the evaluation rows of A + j, for every j
        (-inf / -1 for j in A; accuracy NaN unless ``with_accuracy``)."""
        loglik, correct = _lda_candidates(
            self.residual, self._blocked(self.class_residual),
            self._blocked(np.maximum(self.schur, self.ridge * 1e-3), fill=1.0),
            jnp.asarray(self.logits, jnp.float32), jnp.asarray(self.labels),
            jnp.asarray(self.weights), row_block=self.row_block, with_accuracy=with_accuracy)
        D = self.num_neurons
        loglik = np.asarray(loglik, np.float64).reshape(-1)[:D] / self.eval_weight
        accuracy = (np.asarray(correct, np.float64).reshape(-1)[:D] / self.eval_weight
                    if with_accuracy else np.full(D, np.nan))
        loglik[self.selected], accuracy[self.selected] = -np.inf, -1.0
        return loglik, accuracy

    def add(self, a: int) -> None:
        """Adds neuron ``a`` to the set: rank-1 updates of every kept quantity."""
        fit_index, X = self.fit.index, self.X
        x_a = np.asarray(X[fit_index, a], np.float64) * self.fit.weights
        covariance = np.zeros(self.num_neurons)                    # S_a,: (with the ridge)
        step = max(1, _BLOCK_ELEMENTS // self.num_neurons)
        for start in range(0, len(fit_index), step):               # whole rows: no column copy
            rows = fit_index[start:start + step]
            covariance += x_a[start:start + step].astype(np.float32) @ np.asarray(
                X[rows], np.float32)
        covariance = covariance / self.total - (self.priors * self.means[:, a]) @ self.means
        covariance[a] += self.ridge
        residual_cov = covariance - self.gain_rows[:, a] @ self.gain_rows   # S^(A)_a,:
        scale = np.sqrt(residual_cov[a])
        g = residual_cov / scale
        z = np.asarray(self.residual[a // self.width, :, a % self.width], np.float64) / scale
        mz = self.class_residual[:, a] / scale
        self.logits -= 0.5 * (z[:, None] - mz[None, :]) ** 2
        self.residual = _rank1_update(self.residual, jnp.asarray(z, jnp.float32),
                                      self._blocked(g))
        self.class_residual -= np.outer(mz, g)
        self.schur -= g * g
        self.gain_rows = np.vstack([self.gain_rows, g])
        self.selected.append(int(a))


def gaussian_gains(X, y, w, num_classes: int, selected=(), *, w_eval=None,
                   ridge: float = 1e-3) -> np.ndarray:
    """Gain in mean label log-likelihood (nats per evaluation row) of adding each neuron to the
    Gaussian probe on ``selected`` (-inf for the selected ones); see :func:`gaussian_ordering`.
    With ``selected`` empty this is the single-neuron Gaussian score over the class prior."""
    state = _GaussianSelection(X, y, w, num_classes, w_eval, ridge)
    for a in selected:
        state.add(int(a))
    return state.candidates()[0] - state.loglik()


def gaussian_greedy(X, y, w, num_classes: int, k: int = 100, *, w_eval=None,
                    criterion: str = "loglik", ridge: float = 1e-3):
    """Greedy forward selection of ``k`` neurons; returns (selected [k], the criterion after
    each step [k], single-neuron gains in log-likelihood [D]). See :func:`gaussian_ordering`."""
    if criterion not in ("loglik", "accuracy"):
        raise ValueError(f"unknown criterion {criterion!r}; use loglik or accuracy")
    state = _GaussianSelection(X, y, w, num_classes, w_eval, ridge)
    base = state.loglik()
    single = None
    after = []
    for _ in range(min(k, X.shape[1])):
        loglik, accuracy = state.candidates(with_accuracy=criterion == "accuracy")
        if single is None:
            single = loglik - base
        # accuracy ties (frequent) go to the better log-likelihood, then the lower index
        key = (-loglik,) if criterion == "loglik" else (-loglik, -accuracy)
        best = int(np.lexsort((np.arange(len(loglik)),) + key)[0])
        after.append(loglik[best] if criterion == "loglik" else accuracy[best])
        state.add(best)
    if single is None:
        single = state.candidates()[0] - base
    return np.asarray(state.selected, np.int64), np.asarray(after), single


def gaussian_ordering(X, y, w, num_classes: int, k: int = 100, *, w_eval=None,
                      criterion: str = "loglik", ridge: float = 1e-3) -> np.ndarray:
    """Intrinsic-probe ranking (Torroba Hennigen, Williams & Cotterell, "Intrinsic probing
    through dimension selection", EMNLP 2020), with a shared-covariance Gaussian (LDA) as the
    probe instead of their per-class Gaussians with priors: class means and the pooled
    within-class covariance (plus ``ridge`` on the diagonal) on the train rows ``w``, class
    priors from their frequencies.

    The first ``k`` neurons are chosen greedily: at each step, the candidate whose addition
    gives the best mean label log-likelihood (``criterion="accuracy"``: accuracy, ties by
    log-likelihood) on the rows of ``w_eval`` (default: the train rows), every candidate scored
    in one vectorised pass (Schur complement; :class:`_GaussianSelection`). The other neurons
    follow by their single-neuron gain (the first step's scores), so the ordering is complete.
    Cost per step: O(Ne C D) for the scores (Ne evaluation rows), O((N + C + k) D) for the
    update; memory: one float32 copy of the evaluation rows of ``X``. On 2 CPU cores a step
    takes 0.24 s CPU at Ne = 1,920, C = 7, D = 9,984
    (experiments/benchmarks/bench_ranking_methods.py), about 1 ns per (row, class, neuron): at
    Ne = 20,000, C = 1,251, D = 25,000 a step is minutes, so score on a subsample of rows
    (``w_eval``) or an accelerator there.
    """
    selected, _, single = gaussian_greedy(X, y, w, num_classes, k, w_eval=w_eval,
                                          criterion=criterion, ridge=ridge)
    rest = np.ones(len(single), bool)
    rest[selected] = False
    order = np.flatnonzero(rest)
    order = order[np.lexsort((order, -single[order]))]
    return np.concatenate([selected, order])


# ---------------------------------------------------------------------------------------------
# comparing and combining orderings

def _check_orderings(orderings: dict) -> int:
    sizes = {name: len(o) for name, o in orderings.items()}
    num_neurons = max(sizes.values())
    problems = [f"{name} has {n} neurons, not {num_neurons}" for name, n in sizes.items()
                if n != num_neurons]
    problems += [f"{name} is not a permutation of 0..{num_neurons - 1}"
                 for name, o in orderings.items() if len(o) == num_neurons
                 and not np.array_equal(np.sort(o), np.arange(num_neurons))]
    if problems:
        raise ValueError("orderings do not compare: " + "; ".join(problems))
    return num_neurons


def _ranks(ordering: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(ordering), np.int64)
    ranks[np.asarray(ordering)] = np.arange(len(ordering))
    return ranks


def method_agreement(orderings: dict[str, np.ndarray], fractions=(0.01, 0.05)) -> dict:
    """How far the methods' orderings agree: for every pair, the top-``f`` overlap
    (:func:`speechinterp.probes.ranking.top_overlap`) and the Spearman correlation of the
    neurons' ranks; ``chance`` gives what two random orderings score on average (overlap k/D
    with k the top size, Spearman 0)."""
    num_neurons = _check_orderings(orderings)
    names = list(orderings)
    ranks = {name: _ranks(orderings[name]).astype(np.float64) for name in names}
    n = float(num_neurons)
    pairs = []
    for a, b in combinations(names, 2):
        row = {"a": a, "b": b}
        for f in fractions:
            row[f"top{100 * f:g}_overlap"] = top_overlap(np.asarray(orderings[a]),
                                                         np.asarray(orderings[b]), f)
        # permutations have no ties: Spearman = 1 - 6 sum d^2 / (n (n^2 - 1))
        d2 = float(np.sum((ranks[a] - ranks[b]) ** 2))
        row["spearman"] = 1.0 - 6.0 * d2 / (n * (n * n - 1)) if n > 1 else 1.0
        pairs.append(row)
    chance = {f"top{100 * f:g}_overlap": max(1, int(round(f * num_neurons))) / num_neurons
              for f in fractions}
    chance["spearman"] = 0.0
    return {"methods": names, "num_neurons": num_neurons, "pairs": pairs, "chance": chance}


def voted_ranking(orderings) -> np.ndarray:
    """Combined ordering by voting (Fan et al., "Evaluating neuron interpretation methods of NLP
    models", NeurIPS 2023), with the Borda count: each method gives a neuron D - rank votes
    (rank 0 = its best), so neurons go by increasing mean rank over the methods; ties to the
    lower index. ``orderings``: a dict name -> ordering, or a sequence of orderings."""
    if not isinstance(orderings, dict):
        orderings = {str(i): o for i, o in enumerate(orderings)}
    _check_orderings(orderings)
    total = sum(_ranks(o) for o in orderings.values())
    return np.lexsort((np.arange(len(total)), total))
