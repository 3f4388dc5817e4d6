"""Training an encoder from scratch for a property (the study's "task-oriented" network).

Pure pieces used by ``experiments/train_encoder.py``: splits, batching with random crops, a jitted
optax train step on the encoder's ``classify`` logits (softmax cross-entropy, as Shon et al.'s
``tf.nn.sparse_softmax_cross_entropy_with_logits``) and a jitted evaluation.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def assign_splits(labels: Sequence[str], groups: Sequence[str] | None = None, seed: int = 0,
                  fractions=(0.8, 0.1, 0.1)) -> list[str]:
    """train / dev / test per row; group-disjoint (e.g. by speaker) when ``groups`` is given.

    Without groups the split is stratified by label. Every split gets at least one group (or
    utterance per label) when there are enough.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    out = ["train"] * n
    if groups is not None:
        uniq = sorted(set(groups))
        rng.shuffle(uniq)
        k = len(uniq)
        n_dev = max(1, int(round(fractions[1] * k))) if k >= 3 else 0
        n_test = max(1, int(round(fractions[2] * k))) if k >= 3 else 0
        which = {g: ("dev" if i < n_dev else "test" if i < n_dev + n_test else "train")
                 for i, g in enumerate(uniq)}
        return [which[g] for g in groups]
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    for idx in by_label.values():
        idx = list(rng.permutation(idx))
        k = len(idx)
        n_dev = max(1, int(round(fractions[1] * k))) if k >= 3 else 0
        n_test = max(1, int(round(fractions[2] * k))) if k >= 3 else 0
        for j, i in enumerate(idx):
            out[i] = "dev" if j < n_dev else "test" if j < n_dev + n_test else "train"
    return out


def pad_batch(waves: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (or cut) 1-D waveforms to [B, width] with their valid lengths."""
    out = np.zeros((len(waves), width), np.float32)
    lens = np.zeros(len(waves), np.int32)
    for i, w in enumerate(waves):
        n = min(len(w), width)
        out[i, :n] = w[:n]
        lens[i] = n
    return out, lens


def train_batches(waves: Sequence[np.ndarray], labels: np.ndarray, batch_size: int,
                  crop: int, rng: np.random.Generator) -> Iterator[tuple]:
    """Shuffled batches of random ``crop``-sample segments: (wave [B, crop], lengths, labels, weight).

    The last batch is filled up with weight-0 rows so every batch has the same shape (one jit).
    """
    order = rng.permutation(len(waves))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        segs = []
        for i in idx:
            w = waves[i]
            start = int(rng.integers(0, len(w) - crop + 1)) if len(w) > crop else 0
            segs.append(w[start:start + crop])
        weight = np.ones(batch_size, np.float32)
        if len(idx) < batch_size:
            weight[len(idx):] = 0
            fill = batch_size - len(idx)
            segs += [segs[0]] * fill
            idx = np.concatenate([idx, np.repeat(idx[:1], fill)])
        wav, lens = pad_batch(segs, crop)
        yield wav, lens, labels[idx].astype(np.int32), weight


def weighted_loss(logits, labels, weight):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    denom = jnp.maximum(weight.sum(), 1.0)
    return (ce * weight).sum() / denom, (correct * weight).sum() / denom


def make_train_step(encoder, optimizer: optax.GradientTransformation):
    """Jitted ``step(params, opt_state, wav, lens, labels, weight) -> (params, opt_state, loss, acc)``."""

    def loss_fn(params, wav, lens, labels, weight):
        return weighted_loss(encoder.classify(params, wav, lens), labels, weight)

    @jax.jit
    def step(params, opt_state, wav, lens, labels, weight):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, wav, lens, labels, weight)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return step


def make_predict(encoder):
    """Jitted logits of a padded batch (masks optional: in-encoder ablation)."""
    return jax.jit(encoder.classify)


def evaluate(predict, params, encoder, waves: Sequence[np.ndarray], labels: np.ndarray,
             batch_size: int = 16, masks=None) -> dict:
    """Accuracy and mean cross-entropy on whole utterances (length-bucketed batches)."""
    if len(waves) == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "n": 0}
    order = np.argsort([len(w) for w in waves])
    correct = loss = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch, lens = encoder.prepare([waves[i] for i in idx])
        logits = np.asarray(predict(params, jnp.asarray(batch), jnp.asarray(lens), masks))
        y = labels[idx]
        correct += float((logits.argmax(-1) == y).sum())
        loss += float(optax.softmax_cross_entropy_with_integer_labels(
            jnp.asarray(logits), jnp.asarray(y)).sum())
    return {"accuracy": correct / len(waves), "loss": loss / len(waves), "n": len(waves)}
