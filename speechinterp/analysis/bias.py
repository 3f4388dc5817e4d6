"""Bias of a task model through its own neurons (docs/method.md, "Bias"; Chowdhury et al. 2023 §7).

The neurons most salient for a protected property (e.g. gender), taken from the probe ranking on
the model's own representations, are masked *inside* the encoder's forward pass (a pure-function
``masks`` argument), and the model's accuracy on its own task is measured per protected group,
against an equally large random mask.
"""
from __future__ import annotations

import os

import numpy as np

from speechinterp.bootstrap import ci_list, cluster_bootstrap_ci, resampled_means


def layer_masks(ranking, layer_names, dims, count: int | None = None, neurons=None) -> dict:
    """``{layer_name: keep vector}`` zeroing the first ``count`` (layer, neuron) pairs of a
    ranking (or the given ``neurons``)."""
    keep = {name: np.ones(d, np.float32) for name, d in zip(layer_names, dims)}
    for k, j in (neurons if neurons is not None else ranking[:count]):
        keep[layer_names[k]][j] = 0
    return keep


def group_accuracy(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    """Accuracy per group, overall, and the gap between the best and worst group."""
    acc = {str(g): float(np.mean(pred[groups == g] == y[groups == g])) for g in np.unique(groups)}
    vals = list(acc.values())
    return {**acc, "all": float(np.mean(pred == y)), "gap": max(vals) - min(vals)}


def group_counts(groups: np.ndarray, speakers: np.ndarray | None) -> dict:
    """``{group: {"utterances": n, "speakers": k or None}}``."""
    return {str(g): {"utterances": int(np.sum(groups == g)),
                     "speakers": (int(len(np.unique(speakers[groups == g])))
                                  if speakers is not None else None)}
            for g in np.unique(groups)}


def _ci(draws, level: float = 0.95) -> list:
    a = (1 - level) / 2
    return ci_list([np.quantile(draws, a), np.quantile(draws, 1 - a)])


def bias_intervals(correct: dict, groups: np.ndarray, clusters: np.ndarray | None,
                   resamples: int = 1000, seed: int = 0) -> dict:
    """95% intervals of a bias measurement from per-utterance correctness.

    ``correct`` maps ``"accuracy"``, ``"masked"`` and ``"random_masked"`` to bool [N]. Speakers
    (``clusters``) are resampled with their utterances, within each group (a speaker belongs to
    one group), so the group intervals are independent and the gap's interval is the spread of
    the best-minus-worst group difference (best and worst by the point estimates).
    """
    keys = ("accuracy", "masked", "random_masked")
    C = np.stack([np.asarray(correct[k], np.float64) for k in keys])               # [3, N]
    V = np.concatenate([C, C[:1] - C[1:2]])                                        # + drop
    names = keys + ("masked_drop",)
    out = {f"{k}_ci95": {} for k in names}
    draws = {}
    for i, g in enumerate(np.unique(groups)):
        m = groups == g
        cl = clusters[m] if clusters is not None else None
        draws[str(g)] = resampled_means(V[:, m], cl, resamples, seed + i)          # [4, R]
        for k, d in zip(names, draws[str(g)]):
            out[f"{k}_ci95"][str(g)] = _ci(d)
    for k, c in zip(names, cluster_bootstrap_ci(V, clusters, resamples, seed)):
        out[f"{k}_ci95"]["all"] = ci_list(c)
    point = {g: V[:, groups == g].mean(1) for g in draws}
    for j, key in ((0, "gap_ci95"), (3, "masked_drop_gap_ci95")):
        order = sorted(point, key=lambda g: point[g][j])
        lo, hi = order[0], order[-1]
        out[key] = _ci(draws[hi][j] - draws[lo][j])
    return out


def predict_classes(encoder, waves, masks=None, batch_size: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(waves), batch_size):
        logits = encoder.predict_logits(waves[i:i + batch_size], masks=masks)
        out.append(np.asarray(logits).argmax(-1))
    return np.concatenate(out)


def bias_from_predictions(preds: dict, y, g, speakers=None, resamples: int = 1000,
                          seed: int = 0) -> dict:
    """Group accuracies, drops, counts and intervals from the three prediction vectors
    (``accuracy``: unmasked, ``masked``, ``random_masked``)."""
    acc = {k: group_accuracy(p, y, g) for k, p in preds.items()}
    drop = {k: acc["accuracy"][k] - acc["masked"][k] for k in acc["accuracy"] if k != "gap"}
    groups_only = [v for k, v in drop.items() if k != "all"]
    drop["gap"] = max(groups_only) - min(groups_only)
    return {**acc, "masked_drop": drop, "counts": group_counts(g, speakers),
            "clustered_by": "speaker" if speakers is not None else "utterance",
            "resamples": resamples,
            **bias_intervals({k: p == y for k, p in preds.items()}, g, speakers, resamples,
                             seed)}


def masking_bias(encoder, store, rows_mask, task: str, protected: str, ranking,
                 fraction: float, audio_root: str, seed: int = 0,
                 resamples: int = 1000) -> dict:
    """Per-group accuracy of ``encoder`` on its own ``task`` for the store rows in
    ``rows_mask``: unmasked, with the top ``fraction`` of ``protected``-salient neurons masked
    inside the encoder, and with as many random neurons masked; with counts per group and 95%
    intervals clustered by speaker where the store has a speaker column."""
    from speechinterp.audio import load_audio

    classes = list(encoder.config.classes)
    labels = np.array(store.column(task))
    groups = np.array(store.column(protected))
    sel = np.flatnonzero(np.asarray(rows_mask) & np.isin(labels, classes) & (groups != ""))
    paths = [p if os.path.isabs(p) else os.path.join(audio_root, p)
             for p in np.array(store.column("path"))[sel]]
    waves = [load_audio(p, encoder.sample_rate) for p in paths]
    y = np.array([classes.index(l) for l in labels[sel]])
    g = groups[sel]
    speakers = None
    if store.has_column("speaker"):              # an unknown speaker is a cluster of its own
        speakers = np.array(store.column("speaker"))[sel]
        speakers = np.where(speakers == "", [f"#row{i}" for i in sel], speakers)
    names, dims = store.layer_names, store.dims
    count = max(1, int(round(fraction * sum(dims))))
    rng = np.random.default_rng(seed)
    all_pairs = [(k, j) for k, d in enumerate(dims) for j in range(d)]
    rand = [all_pairs[i] for i in rng.choice(len(all_pairs), count, replace=False)]
    preds = {"accuracy": predict_classes(encoder, waves),
             "masked": predict_classes(encoder, waves, layer_masks(ranking, names, dims, count)),
             "random_masked": predict_classes(encoder, waves,
                                              layer_masks(ranking, names, dims, neurons=rand))}
    return {"task": task, "protected": protected, "masked_neurons": count,
            "salient_fraction": fraction, "utterances": int(len(sel)),
            **bias_from_predictions(preds, y, g, speakers, resamples, seed)}
