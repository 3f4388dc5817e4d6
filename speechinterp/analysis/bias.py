"""Bias of a task model through its own neurons (METHOD.md, "Bias"; Chowdhury et al. 2023 §7).

The neurons most salient for a protected property (e.g. gender), taken from the probe ranking on
the model's own representations, are masked *inside* the encoder's forward pass (a pure-function
``masks`` argument), and the model's accuracy on its own task is measured per protected group,
against an equally large random mask.
"""
from __future__ import annotations

import os

import numpy as np


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


def predict_classes(encoder, waves, masks=None, batch_size: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(waves), batch_size):
        logits = encoder.predict_logits(waves[i:i + batch_size], masks=masks)
        out.append(np.asarray(logits).argmax(-1))
    return np.concatenate(out)


def masking_bias(encoder, store, rows_mask, task: str, protected: str, ranking,
                 fraction: float, audio_root: str, seed: int = 0) -> dict:
    """Per-group accuracy of ``encoder`` on its own ``task`` for the store rows in
    ``rows_mask``: unmasked, with the top ``fraction`` of ``protected``-salient neurons masked
    inside the encoder, and with as many random neurons masked."""
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
    names, dims = store.layer_names, store.dims
    count = max(1, int(round(fraction * sum(dims))))
    rng = np.random.default_rng(seed)
    all_pairs = [(k, j) for k, d in enumerate(dims) for j in range(d)]
    rand = [all_pairs[i] for i in rng.choice(len(all_pairs), count, replace=False)]
    base = group_accuracy(predict_classes(encoder, waves), y, g)
    masked = group_accuracy(predict_classes(encoder, waves, layer_masks(ranking, names, dims,
                                                                         count)), y, g)
    random = group_accuracy(predict_classes(encoder, waves, layer_masks(
        ranking, names, dims, neurons=rand)), y, g)
    drop = {k: base[k] - masked[k] for k in base if k not in ("gap",)}
    groups_only = [v for k, v in drop.items() if k != "all"]
    drop["gap"] = max(groups_only) - min(groups_only)
    return {"task": task, "protected": protected, "masked_neurons": count,
            "utterances": int(len(sel)), "accuracy": base, "masked": masked,
            "random_masked": random, "masked_drop": drop}
