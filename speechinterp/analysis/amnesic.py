"""Amnesic probing (Elazar et al., TACL 2021, "Amnesic Probing: Behavioral Explanation with
Amnesic Counterfactuals"): erase property P at layer k *inside* the encoder's forward pass and
ask what the later layers k+1..L still encode.

1. Fit a LEACE eraser for P on the train rows of layer k's stored utterance vectors
   (:func:`~speechinterp.analysis.erasure.fit_leace`). Mean pooling is linear, so the eraser,
   applied to every frame of layer k as an affine mask entry
   (:class:`~speechinterp.encoders.base.AffineMap`), yields exactly the erased pooled vectors
   at layer k; the later layers then compute from erased frames.
2. Re-extract every layer with that mask, and with the control: a random subspace of the same
   rank removed at layer k (:func:`~speechinterp.analysis.erasure.random_erasure`, centred at
   the same mean).
3. For each property Q (P included) and each layer k..L, a fresh elastic-net probe on the
   original, the erased and the control vectors: test accuracy with 95% speaker-clustered
   intervals, paired over the three (same resamples).

A drop in Q's accuracy after erasing P, beyond the drop after the random control, says that the
later layers used P's linear information at layer k to compute Q (or Q is linear in P).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from speechinterp.analysis import erasure
from speechinterp.encoders.base import AffineMap
from speechinterp.probes.data import TEST, TRAIN
from speechinterp.probes.elastic_net import DEFAULT, ProbeConfig


def masked_vectors(encoder, waves: Sequence[np.ndarray], masks: Mapping | None, *,
                   batch_size: int = 16, extract: Callable | None = None) -> list[np.ndarray]:
    """Every layer's utterance vectors [len(waves), D_k] with ``masks`` applied inside the
    forward pass. ``extract(encoder, waves, masks) -> [array [n, D_k] per layer]`` runs one
    batch (default :func:`speechinterp.extract.pooled_vectors`: jitted, sharded over devices,
    mean over valid frames); batches are formed by length (:func:`~speechinterp.extract.
    length_batches`), as ``experiments.extract`` does, so vectors match a store's."""
    from speechinterp.extract import length_batches, pooled_vectors
    extract = extract or pooled_vectors
    out = None
    for b in length_batches([len(w) for w in waves], batch_size):
        vecs = extract(encoder, [waves[j] for j in b], masks)
        if out is None:
            out = [np.zeros((len(waves), v.shape[1]), np.float32) for v in vecs]
        for k, v in enumerate(vecs):
            out[k][b] = v
    return out


def amnesic_probing(encoder, waves: Sequence[np.ndarray], tasks: Mapping[str, object],
                    prop: str, layer: str, *, original: list[np.ndarray] | None = None,
                    cfg: ProbeConfig = DEFAULT, seed: int = 0, batch_size: int = 16,
                    extract: Callable | None = None) -> dict:
    """Erase ``prop`` at ``layer`` inside ``encoder`` and probe every task at that layer and
    the later ones, against the unerased vectors and a random erasure of the same rank.

    Parameters
    ----------
    encoder : a loaded :class:`~speechinterp.encoders.base.Encoder` (its ``params`` are used).
    waves : 1-D float32 waveforms at ``encoder.sample_rate``, one per store row (all N rows).
    tasks : ``{name: TaskData}`` (:func:`speechinterp.probes.data.prepare_task`: ``rows`` into
        the N store rows, ``y``, ``split``, ``groups``); must contain ``prop``.
    prop, layer : the property erased and the layer name (one of ``encoder.layer_names``).
    original : the unerased vectors (the store's layers, float32 [N, D_k]); None re-extracts.
    cfg, seed : probe settings (lambda chosen on dev) and the seed of probes, control and
        bootstrap.
    batch_size, extract : see :func:`masked_vectors`.

    Returns
    -------
    dict (JSON-ready): ``property``, ``layer``, ``rank`` (directions removed), ``eraser_check``
    (:func:`~speechinterp.analysis.erasure.erasure_check` of P on the stored layer),
    ``layers`` (the names probed: ``layer`` and later), and ``tasks``: per task
    ``{"majority_accuracy", "num_test", "layers": [{"name", "original", "erased", "random"}]}``,
    each variant ``{"accuracy", "accuracy_ci95"}``; ``seconds`` per stage.
    """
    names = list(encoder.layer_names)
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not one of the encoder's layers {names}")
    if prop not in tasks:
        raise ValueError(f"the erased property {prop!r} is not among the tasks {list(tasks)}")
    k = names.index(layer)
    seconds = {}
    t0 = time.perf_counter()
    if original is None:
        original = masked_vectors(encoder, waves, None, batch_size=batch_size, extract=extract)
        seconds["extract_original"] = time.perf_counter() - t0
    original = [np.asarray(v, np.float32) for v in original]
    td = tasks[prop]
    X_prop = original[k][td.rows]
    train = td.split == TRAIN
    eraser = erasure.fit_leace(X_prop[train], td.y[train], td.num_classes)
    rank = erasure.removed_rank(eraser)
    control = erasure.random_erasure(X_prop.shape[1], rank, seed,
                                     mean=X_prop[train].mean(0))
    check = erasure.erasure_check(X_prop, td.y, td.split, eraser, groups=td.groups,
                                  num_classes=td.num_classes, cfg=cfg, seed=seed)
    t1 = time.perf_counter()
    variants = {"original": original}
    for name, amap in (("erased", eraser), ("random", control)):
        variants[name] = masked_vectors(encoder, waves, {layer: amap}, batch_size=batch_size,
                                        extract=extract)
    seconds["extract_masked"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    probed = names[k:]
    out_tasks = {}
    for task, data in tasks.items():
        stack = [variants[v][j][data.rows] for v in variants for j in range(k, len(names))]
        fit = erasure.probe_layers(stack, data.y, data.split, num_classes=data.num_classes,
                                   cfg=cfg, seed=seed)
        groups = None if data.groups is None else np.asarray(data.groups)[data.split == TEST]
        accs = erasure.accuracy_with_interval(fit["pred_test"], data.y[data.split == TEST],
                                              groups, seed)
        n = len(probed)
        rows = [{"name": name, **{v: accs[i * n + j] for i, v in enumerate(variants)}}
                for j, name in enumerate(probed)]
        out_tasks[task] = {"majority_accuracy": erasure.majority_baseline(data.y, data.split),
                           "num_test": int(np.sum(data.split == TEST)), "layers": rows}
    seconds["probes"] = time.perf_counter() - t2
    return {"property": prop, "layer": layer, "rank": rank, "eraser_check": check,
            "layers": probed, "tasks": out_tasks, "seconds": seconds}


def eraser_for(layer_vectors: np.ndarray, task_data, layer: str) -> dict[str, AffineMap]:
    """``{layer: LEACE eraser}`` for ``task_data`` (a TaskData) fitted on the train rows of one
    layer's stored vectors [N, D]: a ``masks`` argument for any encoder call."""
    X = np.asarray(layer_vectors, np.float32)[task_data.rows]
    train = task_data.split == TRAIN
    return {layer: erasure.fit_leace(X[train], task_data.y[train], task_data.num_classes)}


def first_per_speaker(store, n: int) -> np.ndarray:
    """Store rows of the first ``n`` utterances of every speaker."""
    seen: dict = {}
    keep = []
    for i, s in enumerate(store.column("speaker")):
        if seen.get(s, 0) < n:
            seen[s] = seen.get(s, 0) + 1
            keep.append(i)
    return np.asarray(keep)


def subset_task(store, task: str, keep: np.ndarray, seed: int):
    """``prepare_task`` on the store, restricted to the rows ``keep`` (rows renumbered to
    positions in ``keep``); speaker identity re-split by utterance within the subset."""
    import dataclasses

    from speechinterp.corpus import splits
    from speechinterp.probes import data as D
    td = D.prepare_task(store, task, seed)
    pos = np.full(len(store), -1)
    pos[keep] = np.arange(len(keep))
    sel = pos[td.rows] >= 0
    split = td.split[sel]
    if task in D.SPEAKER_TASKS:
        split = splits.stratified_split(td.y[sel], seed, splits.PROBE_FRACTIONS)
    return dataclasses.replace(td, rows=pos[td.rows][sel], y=td.y[sel], split=split,
                               groups=None if td.groups is None else td.groups[sel])


def amnesic_on_store(encoder, store, audio_root: str, properties, tasks, per_speaker: int,
                     cfg: ProbeConfig = DEFAULT, seed: int = 0, batch_size: int = 16):
    """Amnesic probing of ``properties`` at ``encoder``'s middle layer on the first
    ``per_speaker`` utterances of every speaker of ``store``; yields ``(property, result)``
    (:func:`amnesic_probing`, with ``layer`` and ``num_utterances``)."""
    from speechinterp import audio
    keep = first_per_speaker(store, int(per_speaker))
    paths = [p if os.path.isabs(p) else os.path.join(audio_root, p)
             for p in np.array(store.column("path"))[keep]]
    waves = [audio.load_audio(p, encoder.sample_rate, 0.0) for p in paths]
    original = [np.asarray(store.layer(k)[keep], np.float32) for k in range(store.num_layers)]
    tasks = {t: subset_task(store, t, keep, seed) for t in tasks if store.has_column(t)}
    layer = encoder.layer_names[len(encoder.layer_names) // 2]
    for prop in properties:
        if prop not in tasks:
            continue
        res = amnesic_probing(encoder, waves, tasks, prop, layer, original=original, cfg=cfg,
                              seed=seed, batch_size=batch_size)
        yield prop, {**res, "num_utterances": int(len(keep))}
