"""Training the dialect / speaker-ID CNN from scratch for a property of a manifest:
``train_and_evaluate(config, workdir)``, the loop behind ``experiments.train_encoder`` (a thin
absl wrapper, as in Flax's examples).

The run, in order: the manifest's labelled rows (:func:`labelled_rows`, split 80/10/10 when the
manifest has no split), the encoder (:func:`build_encoder`), the audio of each split
(:func:`load_splits`; unreadable or too-short audio is skipped and listed), then :func:`fit`:
a data-dependent initialisation, AdamW on a warmup + cosine schedule, one epoch of random crops
after another with a dev evaluation each, and early stopping on dev accuracy. The best epoch's
parameters are evaluated on the test split and written by :func:`write_encoder`.

What ``workdir`` holds at the end:

* ``config.json`` + ``params/``: an encoder directory that ``speechinterp.encoders.load`` reads
  like any converted encoder; ``config.json`` adds the class labels, ``test_accuracy``,
  ``dev_accuracy`` (the best epoch's), ``majority_accuracy``, ``epochs_run``, ``best_epoch``,
  the ``recipe`` and the ``skipped`` audio;
* ``train_history.json``: one record per epoch (train loss, dev accuracy and loss, whether it is
  the best so far, seconds since the start);
* ``test_predictions.csv``: utt_id, path (absolute), speaker, gender, label, predicted;
* ``train_state/``: an orbax CheckpointManager with the last epochs' state and the best
  parameters. A run on a ``workdir`` that holds one resumes after its last finished epoch (up
  to ``config.epochs``).

The library does no printing: progress goes to absl logging, a tqdm bar when ``progress`` is
set, and the one-line messages a script prints through ``report``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from typing import Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from tqdm import tqdm

from speechinterp import audio, checkpoint, training
from speechinterp.corpus.manifest import read_manifest
from speechinterp.corpus.splits import SPLITS
from speechinterp.encoders.cnn import CNNEncoder, preset_config
from speechinterp.probes.data import SPEAKER_TASKS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the defaults are ``experiments.train_encoder``'s
    flag defaults (its flags' help says what each one does)."""

    manifest: str
    property: str
    preset: str = "mgb3"
    features: str | None = None        # None: the preset's front end
    epochs: int = 30
    patience: int = 6                  # 0: never stop early
    batch_size: int = 32
    lr: float = 3e-3
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    crop_seconds: float = 3.0
    crops_per_utt: int = 2
    augment_warp: float = 0.12         # never for speaker identity (see ``warp``)
    augment_gain_db: float = 6.0
    augment_noise: float = 0.3
    normalize: str = "meanvar"         # "preset": the preset's own
    data_init: bool = True
    filters: tuple[int, ...] = ()      # (): the preset's
    fc_dims: tuple[int, ...] = ()
    seed: int = 0
    sample_rate: int = 16000
    keep_checkpoints: int = 2

    def warp(self) -> float:
        """The speed / vocal-tract warp used: none for speaker identity, whose label a warp
        would change."""
        return 0.0 if self.property in SPEAKER_TASKS else self.augment_warp

    def recipe(self) -> dict:
        """The training recipe recorded in the encoder's ``config.json``."""
        return dict(lr=self.lr, schedule=self.schedule, warmup_epochs=self.warmup_epochs,
                    weight_decay=self.weight_decay, batch_size=self.batch_size,
                    crop_seconds=self.crop_seconds, crops_per_utt=self.crops_per_utt,
                    augment_warp=self.warp(), data_init=self.data_init,
                    normalize=self.normalize, augment_gain_db=self.augment_gain_db,
                    augment_noise=self.augment_noise, patience=self.patience, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class SplitData:
    """One split's usable utterances: waveforms, class indices and their manifest rows."""

    waves: list
    labels: np.ndarray
    rows: list


@dataclasses.dataclass(frozen=True)
class Fit:
    """What :func:`fit` ends with: the best epoch's parameters, the history of every epoch (a
    resumed run's earlier ones too), the early-stopping state and the epochs run."""

    best_params: dict
    history: list
    stopper: training.EarlyStopping
    epochs_run: int


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What :func:`train_and_evaluate` wrote to ``workdir``, in numbers."""

    workdir: str
    classes: tuple
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    dev_accuracy: float | None
    test_accuracy: float
    test_n: int
    majority_accuracy: float
    skipped: tuple


def labelled_rows(config: TrainConfig) -> list[dict]:
    """The manifest's rows with a ``config.property`` label, in file order, each with a split:
    the manifest's own, else assigned 80/10/10 (:func:`training.assign_splits`; by speaker when
    the manifest has a ``speaker`` column and the property is not the speaker)."""
    rows = read_manifest(config.manifest, required=("utt_id", "path"), label=config.property,
                         fallback_fmt="csv")
    prop = config.property
    if not any(r.get("split") for r in rows):
        by_speaker = "speaker" in rows[0] and prop != "speaker"
        groups = [r["speaker"] for r in rows] if by_speaker else None
        for r, s in zip(rows, training.assign_splits([r[prop] for r in rows], groups,
                                                      config.seed)):
            r["split"] = s
    return rows


def build_encoder(config: TrainConfig, classes: Sequence[str]) -> CNNEncoder:
    """The untrained encoder: the preset with the config's overrides and one output per class."""
    overrides = dict(n_classes=len(classes), classes=tuple(classes),
                     sample_rate=config.sample_rate)
    if config.features:
        overrides["features"] = config.features
    if config.normalize and config.normalize != "preset":
        overrides["normalize"] = config.normalize
    if config.filters:
        overrides["filters"] = tuple(int(v) for v in config.filters)
    if config.fc_dims:
        overrides["fc_dims"] = tuple(int(v) for v in config.fc_dims)
    return CNNEncoder(config=preset_config(config.preset, **overrides), family="cnn",
                      sample_rate=config.sample_rate)


def load_splits(rows: Sequence[dict], prop: str, classes: Sequence[str], sample_rate: int,
                min_samples: int) -> tuple[dict[str, SplitData], list[str]]:
    """({split: :class:`SplitData`}, skipped): the audio of every row, in manifest order; audio
    that cannot be read, is shorter than ``min_samples`` or is non-finite is skipped and listed
    as ``"path: reason"``."""
    data, skipped = {}, []
    for split in SPLITS:
        waves, labels, kept = [], [], []
        for r in rows:
            if r["split"] != split:
                continue
            try:
                w = audio.load_audio(r["path"], sample_rate)
                if w.size < min_samples or not np.all(np.isfinite(w)):
                    raise ValueError(f"{w.size} samples or non-finite values")
            except ValueError as e:   # bad audio (AudioError is one): skip, list it, go on
                skipped.append(f"{r['path']}: {e}")
                continue
            waves.append(w)
            labels.append(classes.index(r[prop]))
            kept.append(r)
        data[split] = SplitData(waves, np.asarray(labels, np.int32), kept)
    return data, skipped


def fit(config: TrainConfig, workdir: str, encoder: CNNEncoder, train: SplitData,
        dev: SplitData, *, progress: bool = False, report: Callable[[str], None] | None = None,
        t0: float | None = None) -> Fit:
    """Train ``encoder`` on ``train`` with early stopping on ``dev``, resuming from
    ``workdir/train_state`` when it holds a run; ``workdir/train_history.json`` is rewritten
    after every epoch.

    Each epoch's crops come from ``np.random.default_rng([seed, epoch])``, so a resumed run
    draws what an uninterrupted one would have."""
    report = report or (lambda line: None)
    t0 = time.time() if t0 is None else t0
    n_steps = training.steps_per_epoch(len(train.waves), config.batch_size, config.crops_per_utt)
    optimizer = training.make_optimizer(training.make_schedule(
        config.lr, config.epochs * n_steps, int(round(config.warmup_epochs * n_steps)),
        config.schedule), config.weight_decay)
    crop = max(int(config.crop_seconds * config.sample_rate), encoder.min_samples())
    params = initial_params(config, encoder, train, crop)
    state = {"params": params, "opt_state": optimizer.init(params), "best_params": params}
    ckpt_dir = os.path.abspath(os.path.join(workdir, "train_state"))
    hist_path = os.path.join(workdir, "train_history.json")
    mgr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True))
    state, history, start = _resume(mgr, state, hist_path)
    stopper = training.EarlyStopping.from_history(config.patience, history)
    step = training.make_train_step(encoder, optimizer)
    predict = training.make_predict(encoder)
    if start:
        dev_eval = training.evaluate(predict, state["params"], encoder, dev.waves, dev.labels)
        logging.info("resumed from %s at epoch %d", ckpt_dir, start)
        report(f"resumed at epoch {start}: dev loss {dev_eval['loss']:.6f}")
    augment = training.Augment(warp=config.warp(), gain_db=config.augment_gain_db,
                               noise_prob=config.augment_noise)
    params, opt_state, best_params = state["params"], state["opt_state"], state["best_params"]
    epoch = start
    while epoch < config.epochs and not stopper.should_stop():
        epoch += 1
        batches = training.train_batches(train.waves, train.labels, config.batch_size, crop,
                                         np.random.default_rng([config.seed, epoch]),
                                         config.crops_per_utt, augment)
        params, opt_state, train_loss = train_epoch(
            step, params, opt_state, tqdm(batches, total=n_steps, disable=not progress,
                                          desc=f"epoch {epoch}/{config.epochs}"))
        dev_eval = training.evaluate(predict, params, encoder, dev.waves, dev.labels)
        stopper, improved = stopper.update(epoch, dev_eval["accuracy"], dev_eval["loss"])
        if improved:
            best_params = params
        rec = {"epoch": epoch, "train_loss": train_loss,
               "dev_accuracy": dev_eval["accuracy"], "dev_loss": dev_eval["loss"],
               "best": improved, "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        logging.info("epoch %d: train loss %.4f, dev accuracy %.4f", epoch, rec["train_loss"],
                     rec["dev_accuracy"])
        report(f"epoch {epoch}: train loss {rec['train_loss']:.4f} dev accuracy "
               f"{rec['dev_accuracy']:.4f}{' *' if improved else ''}")
        mgr.save(epoch, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state,
                                                    "best_params": best_params}))
        mgr.wait_until_finished()
        os.makedirs(workdir, exist_ok=True)
        with open(hist_path, "w") as f:
            json.dump(history, f, indent=1)
    mgr.close()
    if stopper.should_stop():
        report(f"early stop after epoch {epoch}: no better dev accuracy for {config.patience} "
               f"epochs")
    return Fit(best_params, history, stopper, epoch)


def train_epoch(step, params, opt_state, bar) -> tuple[dict, dict, float]:
    """One pass of the jitted ``step`` over the batches of ``bar`` (a tqdm over
    :func:`training.train_batches`): (params, opt_state, mean training loss)."""
    losses = []
    for wav, lens, y, weight in bar:
        params, opt_state, loss, acc = step(params, opt_state, wav, lens, y, weight)
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{float(acc):.2f}")
    return params, opt_state, float(np.mean(losses))


def initial_params(config: TrainConfig, encoder: CNNEncoder, train: SplitData, crop: int):
    """Random parameters from ``config.seed``, rescaled by :func:`training.data_init` on up to
    128 training crops (``config.data_init``)."""
    params = encoder.init_params(jax.random.PRNGKey(config.seed))
    if config.data_init:
        wav, lens, _, _ = next(training.train_batches(
            train.waves, train.labels, min(128, len(train.waves)), crop,
            np.random.default_rng([config.seed, 0])))
        params = training.data_init(encoder, params, wav, lens)
    return params


def _resume(mgr: ocp.CheckpointManager, state: dict, hist_path: str
            ) -> tuple[dict, list, int]:
    """(state, history, last finished epoch) of the run ``mgr`` holds; ``state`` itself, no
    history and epoch 0 when it holds none."""
    if mgr.latest_step() is None:
        return state, [], 0
    start = int(mgr.latest_step())
    state = mgr.restore(start, args=ocp.args.StandardRestore(jax.tree.map(np.asarray, state)))
    history = []
    if os.path.exists(hist_path):
        with open(hist_path) as f:
            history = [h for h in json.load(f) if h["epoch"] <= start]
    return state, history, start


def write_encoder(config: TrainConfig, workdir: str, encoder: CNNEncoder,
                  data: dict[str, SplitData], result: Fit, skipped: Sequence[str]
                  ) -> TrainSummary:
    """Evaluate the best epoch's parameters on the test split; write the encoder directory
    (``config.json`` + ``params/``) and ``test_predictions.csv`` to ``workdir``."""
    classes = list(encoder.config.classes)
    encoder.params = jax.tree.map(np.asarray, result.best_params)
    test = training.evaluate(training.make_predict(encoder), encoder.params, encoder,
                             data["test"].waves, data["test"].labels)
    majority = training.majority_accuracy(data["train"].labels, data["test"].labels)
    best_epoch = result.stopper.best_epoch
    best = next((h for h in result.history if h["epoch"] == best_epoch), None)
    dev_accuracy = best["dev_accuracy"] if best else None
    checkpoint.save_encoder(
        workdir, encoder, classes=classes, property=config.property,
        trained_on=os.path.abspath(config.manifest), epochs=config.epochs,
        epochs_run=result.epochs_run, best_epoch=best_epoch, dev_accuracy=dev_accuracy,
        test_accuracy=test["accuracy"], majority_accuracy=majority, test_n=test["n"],
        recipe=config.recipe(), skipped=list(skipped))
    write_predictions(os.path.join(workdir, "test_predictions.csv"), data["test"].rows,
                      classes, data["test"].labels, test["predicted"])
    return TrainSummary(workdir, tuple(classes), result.epochs_run, best_epoch,
                        result.stopper.should_stop(), dev_accuracy, test["accuracy"],
                        test["n"], majority, tuple(skipped))


def write_predictions(path: str, rows: Sequence[dict], classes: Sequence[str],
                      labels: np.ndarray, predicted: np.ndarray) -> None:
    """One row per test utterance: utt_id, path, speaker, gender, label, predicted (atomic)."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utt_id", "path", "speaker", "gender", "label", "predicted"])
        for r, y, p in zip(rows, labels, predicted):
            w.writerow([r["utt_id"], r["path"], r.get("speaker") or "", r.get("gender") or "",
                        classes[int(y)], classes[int(p)]])
    os.replace(tmp, path)


def train_and_evaluate(config: TrainConfig, workdir: str, *, rows: Sequence[dict] | None = None,
                       progress: bool = False, report: Callable[[str], None] | None = None
                       ) -> TrainSummary:
    """Train the CNN for ``config.property`` of ``config.manifest`` and write it to ``workdir``
    (see the module docstring for what it holds); a run already there resumes.

    ``rows``: the :func:`labelled_rows` when the caller has read them already (a script checks
    the manifest before its output folder); ``progress`` shows a tqdm bar per epoch; ``report``
    receives the one-line messages of the run (resumed, each epoch, early stop), which
    ``experiments.train_encoder`` prints."""
    t0 = time.time()
    rows = labelled_rows(config) if rows is None else rows
    classes = sorted({r[config.property] for r in rows})
    if len(classes) < 2:
        raise ValueError(f"property {config.property!r} has fewer than 2 classes: {classes}")
    encoder = build_encoder(config, classes)
    data, skipped = load_splits(rows, config.property, classes, config.sample_rate,
                                encoder.min_samples())
    for s in skipped:
        logging.warning("skipped %s", s)
    if not data["train"].waves:
        raise ValueError("no usable training utterances")
    logging.info("classes %s; train %d, dev %d, test %d utterances (%d skipped)", classes,
                 *(len(data[s].waves) for s in SPLITS), len(skipped))
    result = fit(config, workdir, encoder, data["train"], data["dev"], progress=progress,
                 report=report, t0=t0)
    return write_encoder(config, workdir, encoder, data, result, skipped)
