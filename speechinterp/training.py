"""Training an encoder from scratch for a property (the study's "task-oriented" network).

Pure pieces of the loop in :mod:`speechinterp.train_encoder`: splits, batching with several
random crops per utterance and cheap augmentation (gain, additive noise), the optimizer (AdamW
with a warmup + cosine schedule, optax), a jitted train step on the encoder's ``classify``
logits (softmax cross-entropy, as Shon et al.'s ``tf.nn.sparse_softmax_cross_entropy_with_logits``),
a jitted evaluation, and early stopping on dev accuracy.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speechinterp.corpus.splits import (DEFAULT_FRACTIONS, speaker_split, split_names,
                                         stratified_split)


def assign_splits(labels: Sequence[str], groups: Sequence[str] | None = None, seed: int = 0,
                  fractions=DEFAULT_FRACTIONS) -> list[str]:
    """train / dev / test per row (:mod:`speechinterp.corpus.splits`): group-disjoint (e.g. by
    speaker) and stratified by each group's main label when ``groups`` is given, otherwise a
    per-utterance split stratified by label."""
    if groups is not None:
        return split_names(speaker_split(groups, labels, fractions, seed))
    return split_names(stratified_split(labels, seed, fractions))


def pad_batch(waves: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (or cut) 1-D waveforms to [B, width] with their valid lengths."""
    out = np.zeros((len(waves), width), np.float32)
    lens = np.zeros(len(waves), np.int32)
    for i, w in enumerate(waves):
        n = min(len(w), width)
        out[i, :n] = w[:n]
        lens[i] = n
    return out, lens


@dataclasses.dataclass(frozen=True)
class Augment:
    """Per-crop augmentation: a speed / vocal-tract warp (resampling by a factor uniform in
    ``1 +- warp``: pitch, formants and tempo move together), random gain (dB, uniform in
    +-gain_db) and, with probability ``noise_prob``, white noise at an SNR uniform in ``snr_db``."""

    warp: float = 0.0
    gain_db: float = 0.0
    noise_prob: float = 0.0
    snr_db: tuple = (5.0, 30.0)

    def crop(self, w: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
        """A random segment of ``w`` that is ``crop`` samples long after the warp (or shorter,
        when ``w`` is), augmented."""
        f = float(rng.uniform(1 - self.warp, 1 + self.warp)) if self.warp else 1.0
        n = int(np.ceil((crop - 1) * f)) + 1 if f != 1.0 else crop
        start = int(rng.integers(0, len(w) - n + 1)) if len(w) > n else 0
        seg = w[start:start + n]
        if f != 1.0:
            m = min(crop, int((len(seg) - 1) / f) + 1)
            seg = np.interp(np.arange(m) * f, np.arange(len(seg)), seg).astype(np.float32)
        return self(seg, rng)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.gain_db:
            x = x * np.float32(10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20))
        if self.noise_prob and rng.uniform() < self.noise_prob:
            p = float(np.mean(x ** 2)) + 1e-10
            snr = rng.uniform(*self.snr_db)
            x = x + rng.standard_normal(len(x)).astype(np.float32) * np.float32(
                np.sqrt(p / 10 ** (snr / 10)))
        return x


def train_batches(waves: Sequence[np.ndarray], labels: np.ndarray, batch_size: int,
                  crop: int, rng: np.random.Generator, crops_per_utt: int = 1,
                  augment: Augment | None = None) -> Iterator[tuple]:
    """Shuffled batches of random ``crop``-sample segments: (wave [B, crop], lengths, labels, weight).

    Each utterance gives ``crops_per_utt`` independent crops per epoch (shuffled together);
    ``augment`` transforms each crop. The last batch is filled up with weight-0 rows so every
    batch has the same shape (one jit).
    """
    order = rng.permutation(np.repeat(np.arange(len(waves)), crops_per_utt))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        segs = []
        for i in idx:
            w = waves[i]
            if augment is not None:
                segs.append(augment.crop(w, crop, rng))
                continue
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


def steps_per_epoch(n_utterances: int, batch_size: int, crops_per_utt: int = 1) -> int:
    return -(-n_utterances * crops_per_utt // batch_size)


def make_schedule(peak_lr: float, total_steps: int, warmup_steps: int = 0,
                  kind: str = "cosine", final_fraction: float = 0.01) -> optax.Schedule:
    """Learning rate per step: ``cosine`` (linear warmup to ``peak_lr``, cosine decay to
    ``final_fraction * peak_lr`` at ``total_steps``) or ``constant`` (after the warmup)."""
    warmup_steps = int(min(max(warmup_steps, 0), max(total_steps - 1, 0)))
    if kind == "constant":
        if not warmup_steps:
            return optax.constant_schedule(peak_lr)
        return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup_steps),
                                     optax.constant_schedule(peak_lr)], [warmup_steps])
    if kind != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', not {kind!r}")
    return optax.warmup_cosine_decay_schedule(0.0, peak_lr, warmup_steps, max(total_steps, 1),
                                              end_value=peak_lr * final_fraction)


def make_optimizer(schedule, weight_decay: float = 0.0, clip_norm: float | None = None
                   ) -> optax.GradientTransformation:
    """AdamW (Adam when ``weight_decay`` is 0) on ``schedule``, with optional gradient clipping."""
    opt = optax.adamw(schedule, weight_decay=weight_decay) if weight_decay else optax.adam(
        schedule)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Early stopping on dev accuracy (ties broken by lower dev loss), as an immutable state.

    ``update`` returns the new state and whether the epoch is the new best; ``should_stop`` is
    true once ``patience`` epochs in a row did not improve."""

    patience: int
    best_accuracy: float = -np.inf
    best_loss: float = np.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    min_delta: float = 0.0

    def update(self, epoch: int, accuracy: float, loss: float = np.inf
               ) -> tuple["EarlyStopping", bool]:
        better = accuracy > self.best_accuracy + self.min_delta or (
            accuracy >= self.best_accuracy and loss < self.best_loss
            and abs(accuracy - self.best_accuracy) <= self.min_delta)
        if better:
            return dataclasses.replace(self, best_accuracy=float(accuracy),
                                       best_loss=float(loss), best_epoch=int(epoch),
                                       bad_epochs=0), True
        return dataclasses.replace(self, bad_epochs=self.bad_epochs + 1), False

    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    @classmethod
    def from_history(cls, patience: int, history: Sequence[dict], min_delta: float = 0.0
                     ) -> "EarlyStopping":
        """The state after replaying ``history`` (``epoch``, ``dev_accuracy``, ``dev_loss``)."""
        state = cls(patience, min_delta=min_delta)
        for h in history:
            state, _ = state.update(h["epoch"], h["dev_accuracy"], h.get("dev_loss", np.inf))
        return state


def majority_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy on ``test_labels`` of always predicting the most frequent training class."""
    if len(test_labels) == 0 or len(train_labels) == 0:
        return float("nan")
    top = np.bincount(np.asarray(train_labels)).argmax()
    return float(np.mean(np.asarray(test_labels) == top))


def weighted_loss(logits, labels, weight):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    denom = jnp.maximum(weight.sum(), 1.0)
    return (ce * weight).sum() / denom, (correct * weight).sum() / denom


def data_init(encoder, params, wav, lens, zero_classifier: bool = True):
    """Data-dependent initialisation (LSUV-like, Mishkin and Matas 2016): layer by layer, each
    conv / FC kernel and bias rescaled so that the layer's pre-activation has mean 0 and variance 1
    per unit over the batch (valid frames for a conv, utterances for an FC layer); the classifier
    starts at zero (uniform predictions).

    Without it, mean pooling leaves utterance vectors that differ little from one another and
    the ReLUs die in the first steps (the loss stays at log(classes) for epochs)."""
    params = {k: dict(v) for k, v in jax.tree.map(np.asarray, params).items()}
    feats, frames = encoder.features(jnp.asarray(wav), jnp.asarray(lens))
    strides = encoder.config.strides
    for i, name in enumerate(encoder.layer_names):
        _, inter = encoder.module.apply({"params": params}, feats, frames,
                                        capture_intermediates=True, mutable=["intermediates"])
        z = np.asarray(inter["intermediates"][name]["__call__"][0])
        if z.ndim == 3:
            valid = np.asarray(frames) // int(np.prod(strides[:i + 1]))
            z = z[np.arange(z.shape[1])[None, :] < valid[:, None]]
        mu, sd = z.mean(0), z.std(0) + 1e-6
        p = params[name]
        params[name] = {**p, "kernel": (p["kernel"] / sd).astype(np.float32),
                        "bias": ((p["bias"] - mu) / sd).astype(np.float32)}
    if zero_classifier:
        params["classifier"] = {k: np.zeros_like(v) for k, v in params["classifier"].items()}
    return params


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
    """Accuracy, mean cross-entropy and the predicted class per utterance (``predicted``, in the
    order of ``waves``) on whole utterances (length-bucketed batches)."""
    if len(waves) == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "n": 0,
                "predicted": np.zeros(0, np.int32)}
    order = np.argsort([len(w) for w in waves], kind="stable")
    predicted = np.zeros(len(waves), np.int32)
    correct = loss = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch, lens = encoder.prepare([waves[i] for i in idx])
        logits = np.asarray(predict(params, jnp.asarray(batch), jnp.asarray(lens), masks))
        y = labels[idx]
        predicted[idx] = logits.argmax(-1)
        correct += float((logits.argmax(-1) == y).sum())
        loss += float(optax.softmax_cross_entropy_with_integer_labels(
            jnp.asarray(logits), jnp.asarray(y)).sum())
    return {"accuracy": correct / len(waves), "loss": loss / len(waves), "n": len(waves),
            "predicted": predicted}
