"""Representation stores with a planted signal, for tests and benchmarks of the probes."""
from __future__ import annotations

import numpy as np

from speechinterp.store import Store, write_store


def planted_arrays(num_utterances: int = 600, num_speakers: int = 30, dims=(16, 32, 32),
                   signal_layer: int = 1, signal_neurons=(3, 7, 11), num_classes: int = 3,
                   strength: float = 2.0, speaker_scale: float = 1.0, seed: int = 0):
    """Layers [N, D_k] where ``prop`` (random per utterance) lives only in ``signal_neurons`` of
    ``signal_layer``; every layer also carries a per-speaker offset and unit Gaussian noise.

    Returns (arrays, rows) with rows holding utt_id, path, speaker and prop.
    """
    rng = np.random.default_rng(seed)
    spk = np.arange(num_utterances) % num_speakers
    y = rng.integers(0, num_classes, num_utterances)
    arrays = []
    for k, d in enumerate(dims):
        offsets = rng.normal(0, speaker_scale, (num_speakers, d))
        X = rng.normal(0, 1, (num_utterances, d)) + offsets[spk]
        if k == signal_layer:
            means = rng.normal(0, 1, (num_classes, len(signal_neurons)))
            means = strength * means / np.linalg.norm(means, axis=0, keepdims=True)
            X[:, list(signal_neurons)] += means[y]
        arrays.append(X.astype(np.float32))
    rows = [{"utt_id": f"u{i:05d}", "path": f"synthetic/u{i:05d}.wav", "speaker": f"s{spk[i]:03d}",
             "prop": f"c{y[i]}"} for i in range(num_utterances)]
    return arrays, rows


def planted_store(out_dir: str, **kwargs) -> Store:
    arrays, rows = planted_arrays(**kwargs)
    return write_store(out_dir, "synthetic-planted", [f"layer_{k}" for k in range(len(arrays))],
                       arrays, rows)
