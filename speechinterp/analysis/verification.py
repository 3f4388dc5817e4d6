"""Speaker verification per layer: cosine scoring and equal error rate (EER)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def make_trials(speakers: np.ndarray, max_trials: int = 20000, seed: int = 0):
    """Balanced target / non-target trial pairs (i, j, is_target) among the given utterances."""
    rng = np.random.default_rng(seed)
    speakers = np.asarray(speakers)
    n = len(speakers)
    i, j = np.triu_indices(n, 1)
    same = speakers[i] == speakers[j]
    tgt, non = np.flatnonzero(same), np.flatnonzero(~same)
    if len(tgt) == 0 or len(non) == 0:
        raise ValueError("verification needs at least two speakers with two utterances each")
    k = min(len(tgt), len(non), max_trials // 2)
    pick = np.concatenate([rng.choice(tgt, k, replace=False), rng.choice(non, k, replace=False)])
    return i[pick], j[pick], same[pick]


def equal_error_rate(scores: np.ndarray, is_target: np.ndarray) -> float:
    """EER: the operating point where the false-accept and false-reject rates meet."""
    fpr, tpr, _ = roc_curve(is_target.astype(int), scores)
    fnr = 1 - tpr
    k = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[k] + fnr[k]) / 2)


def cosine_scores(X: np.ndarray, i: np.ndarray, j: np.ndarray, center: np.ndarray | None = None):
    X = np.asarray(X, np.float64)
    if center is not None:
        X = X - center
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return np.sum(Xn[i] * Xn[j], axis=1)


def layer_eers(layers: list[np.ndarray], speakers: np.ndarray, test: np.ndarray,
               train: np.ndarray | None = None, max_trials: int = 20000, seed: int = 0):
    """EER of cosine scoring per layer on trials among the ``test`` utterances; the vectors
    are centred with the train-split mean when ``train`` is given."""
    idx = np.flatnonzero(test)
    i, j, tgt = make_trials(np.asarray(speakers)[idx], max_trials, seed)
    out = []
    for X in layers:
        center = np.asarray(X[train], np.float64).mean(0) if train is not None else None
        out.append(equal_error_rate(cosine_scores(np.asarray(X)[idx], i, j, center), tgt))
    return out


def evaluation_split(store) -> np.ndarray:
    """The store's split column; without one (or without test rows), a speaker-disjoint
    70 / 15 / 15% split of its speakers, unstratified (each speaker its own stratum would leave
    test empty)."""
    from speechinterp.corpus import splits
    split = np.array(store.column("split")) if store.has_column("split") else None
    if split is None or not np.any(split == "test"):
        spk = np.array(store.column("speaker"))
        split = np.array(splits.SPLITS)[splits.speaker_split(spk, None, splits.PROBE_FRACTIONS,
                                                             0)]
    return split


def store_eers(store, max_trials: int = 20000, seed: int = 0) -> dict | None:
    """``{"layers", "eer"}``: the EER of every layer of a store on its test speakers (None
    when the store names no speakers)."""
    if not store.has_column("speaker"):
        return None
    split = evaluation_split(store)
    layers = [np.asarray(store.layer(k), np.float32) for k in range(store.num_layers)]
    return {"layers": store.layer_names,
            "eer": layer_eers(layers, np.array(store.column("speaker")), split == "test",
                              split == "train", max_trials, seed)}
