"""Train the dialect / speaker-ID CNN from scratch for a property of a manifest.

    python -m experiments.train_encoder --manifest=utterances.csv --property=accent --out=DIR \
        [--preset=mgb3|adi17|tiny] [--epochs=30] [--patience=6] [--batch_size=32] [--lr=3e-3]

The manifest is a CSV with columns ``utt_id``, ``path`` (relative to the manifest's folder or
absolute), optional ``split`` (train / dev / test) and property columns. Without ``split`` the
rows are split 80/10/10, speaker-disjoint when a ``speaker`` column exists and the property is not
``speaker``. Rows with an empty property cell are skipped; unreadable or empty audio is skipped
and listed in the log.

Training: a data-dependent initialisation, AdamW (optax) with a linear warmup and cosine decay
over ``--epochs``, a jitted step on ``--crops_per_utt`` random ``--crop_seconds`` segments of every
training utterance per epoch (random speed / vocal-tract warp except for speaker identity, gain and
additive noise), per-utterance CMVN of the features, dev accuracy on whole utterances each epoch,
and early stopping:
training ends after ``--patience`` epochs without a better dev accuracy (ties: lower dev loss) or at
``--epochs``, and the saved encoder is the best epoch's. An orbax CheckpointManager under
``DIR/train_state`` holds the last epochs' state and the best parameters (an interrupted run
resumes from its last finished epoch). At the end the encoder directory ``DIR`` (``config.json`` +
``params/``, class labels, ``test_accuracy``, ``dev_accuracy``, ``majority_accuracy``,
``epochs_run``, ``best_epoch`` in ``config.json``) that ``speechinterp.encoders.load(DIR)`` reads
like any converted encoder, and ``DIR/test_predictions.csv``: one row per test utterance with
utt_id, path (absolute), speaker, gender, label and predicted.
"""
import csv
import json
import os
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import flags, logging
from tqdm import tqdm

from speechinterp import checkpoint, cli, training
from speechinterp.encoders.cnn import PRESETS, CNNEncoder, preset_config
from speechinterp.probes.data import SPEAKER_TASKS

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "Manifest CSV (utt_id, path, [split], properties).")
flags.DEFINE_string("property", None, "Property column to classify.")
flags.DEFINE_string("out", None, "Output encoder directory.")
flags.DEFINE_enum("preset", "mgb3", sorted(PRESETS), "Architecture preset.")
flags.DEFINE_enum("features", None, ["logmel", "mfcc"], "Front end (default: the preset's).")
flags.DEFINE_integer("epochs", 30, "Most epochs (a resumed run continues up to this); the cosine "
                     "schedule spans them.")
flags.DEFINE_integer("patience", 6, "Stop after this many epochs without a better dev accuracy "
                     "(0: never stop early).")
flags.DEFINE_integer("batch_size", 32, "Crops per training step.")
flags.DEFINE_float("lr", 3e-3, "Peak learning rate.")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear warmup (epochs).")
flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay (0: Adam).")
flags.DEFINE_float("crop_seconds", 3.0, "Random training segment length (s).")
flags.DEFINE_integer("crops_per_utt", 2, "Random crops of each training utterance per epoch.")
flags.DEFINE_float("augment_warp", 0.12, "Speed / vocal-tract warp of each crop: resampled by a "
                   "factor in 1 +- this (0: off). Never for speaker identity, whose label a warp "
                   "would change.")
flags.DEFINE_float("augment_gain_db", 6.0, "Random gain of each crop, +- dB (0: off).")
flags.DEFINE_float("augment_noise", 0.3, "Probability of white noise (5-30 dB SNR) on a crop.")
flags.DEFINE_enum("normalize", "meanvar", ["preset", "none", "mean", "meanvar", "sliding_mean",
                                           "sliding_meanvar"],
                  "Feature normalisation of the CNN front end (preset: the preset's own). Without "
                  "a normalisation the log-mel offsets keep a CNN trained from scratch from "
                  "learning.")
flags.DEFINE_bool("data_init", True, "Data-dependent initialisation (unit-variance "
                  "pre-activations per layer, zero classifier; training.data_init).")
flags.DEFINE_list("filters", [], "Conv filters, overriding the preset's (e.g. 64,64,64,128).")
flags.DEFINE_list("fc_dims", [], "FC sizes, overriding the preset's (e.g. 128,64).")
flags.DEFINE_integer("seed", 0, "Seed for initialisation, splits, shuffling and crops.")
flags.DEFINE_integer("sample_rate", 16000, "Sample rate the encoder runs at.")
flags.DEFINE_integer("keep_checkpoints", 2, "Training checkpoints kept.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("overwrite", False, "Start afresh: remove what --out holds. Without it a "
                  "training run there resumes, and anything else (an encoder converted from "
                  "elsewhere, a store, a file) is refused.")
cli.positive("epochs", "batch_size", "lr", "crop_seconds", "crops_per_utt", "sample_rate",
             "keep_checkpoints")
cli.non_negative("patience", "warmup_epochs", "weight_decay", "augment_gain_db")
cli.fraction("augment_warp", closed=False)
cli.fraction("augment_noise")
cli.positive_ints("filters", "fc_dims")


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (speechinterp.audio when present)."""
    try:
        from speechinterp.audio import load_audio as _load
    except ImportError:
        _load = None
    if _load is not None:
        return np.asarray(_load(path, sample_rate), np.float32)
    import librosa
    import soundfile as sf

    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate)
    return wav.astype(np.float32)


def read_manifest(path: str, prop: str, seed: int):
    """Rows with a label for ``prop`` and their split (assigned when the manifest has none)."""
    if not os.path.isfile(path):
        raise cli.UserError(f"--manifest={path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: empty manifest")
    for col in ("utt_id", "path", prop):
        if col not in rows[0]:
            raise ValueError(f"{path}: no column {col!r} (columns: {list(rows[0])})")
    rows = [r for r in rows if (r.get(prop) or "").strip()]
    if not any((r.get("split") or "").strip() for r in rows):
        groups = ([r["speaker"] for r in rows]
                  if "speaker" in rows[0] and prop != "speaker" else None)
        for r, s in zip(rows, training.assign_splits([r[prop] for r in rows], groups, seed)):
            r["split"] = s
    base = os.path.dirname(os.path.abspath(path))
    for r in rows:
        r["abspath"] = r["path"] if os.path.isabs(r["path"]) else os.path.join(base, r["path"])
    return rows


def load_split(rows, split, classes, sample_rate, min_samples):
    waves, labels, kept, skipped = [], [], [], []
    for r in rows:
        if r["split"] != split:
            continue
        try:
            w = load_audio(r["abspath"], sample_rate)
            if w.size < min_samples or not np.all(np.isfinite(w)):
                raise ValueError(f"{w.size} samples or non-finite values")
        except Exception as e:  # bad audio: skip, list it, go on
            skipped.append(f"{r['abspath']}: {e}")
            continue
        waves.append(w)
        labels.append(classes.index(r[FLAGS.property]))
        kept.append(r)
    return waves, np.asarray(labels, np.int32), kept, skipped


def write_predictions(path, rows, classes, labels, predicted):
    """One row per test utterance: utt_id, path, speaker, gender, label, predicted."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utt_id", "path", "speaker", "gender", "label", "predicted"])
        for r, y, p in zip(rows, labels, predicted):
            w.writerow([r["utt_id"], r["abspath"], r.get("speaker") or "", r.get("gender") or "",
                        classes[int(y)], classes[int(p)]])
    os.replace(tmp, path)


def check_out(out: str, overwrite: bool) -> None:
    """Refuse an --out holding something other than a training run (which resumes) before
    any work; with --overwrite, remove it."""
    held = cli.check_output(out, "out", ("training run",), overwrite, "a training run")
    if overwrite and held is not None:
        cli.remove(out)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments {argv[1:]}: pass flags as --name=value")
    t0 = time.time()
    if not (FLAGS.manifest and FLAGS.property and FLAGS.out):
        raise cli.UserError("--manifest, --property and --out are required")
    rows = read_manifest(FLAGS.manifest, FLAGS.property, FLAGS.seed)
    check_out(FLAGS.out, FLAGS.overwrite)
    classes = sorted({r[FLAGS.property] for r in rows})
    if len(classes) < 2:
        raise ValueError(f"property {FLAGS.property!r} has fewer than 2 classes: {classes}")
    overrides = dict(n_classes=len(classes), classes=tuple(classes),
                     sample_rate=FLAGS.sample_rate)
    if FLAGS.features:
        overrides["features"] = FLAGS.features
    if FLAGS.normalize and FLAGS.normalize != "preset":
        overrides["normalize"] = FLAGS.normalize
    if FLAGS.filters:
        overrides["filters"] = tuple(int(v) for v in FLAGS.filters)
    if FLAGS.fc_dims:
        overrides["fc_dims"] = tuple(int(v) for v in FLAGS.fc_dims)
    cfg = preset_config(FLAGS.preset, **overrides)
    encoder = CNNEncoder(config=cfg, family="cnn", sample_rate=FLAGS.sample_rate)
    data, kept, skipped = {}, {}, []
    for split in ("train", "dev", "test"):
        w, y, k, s = load_split(rows, split, classes, FLAGS.sample_rate, encoder.min_samples())
        data[split], kept[split] = (w, y), k
        skipped += s
    for s in skipped:
        logging.warning("skipped %s", s)
    if not data["train"][0]:
        raise ValueError("no usable training utterances")
    logging.info("classes %s; train %d, dev %d, test %d utterances (%d skipped)", classes,
                 len(data["train"][0]), len(data["dev"][0]), len(data["test"][0]), len(skipped))

    train_w, train_y = data["train"]
    n_steps = training.steps_per_epoch(len(train_w), FLAGS.batch_size, FLAGS.crops_per_utt)
    schedule = training.make_schedule(FLAGS.lr, FLAGS.epochs * n_steps,
                                      int(round(FLAGS.warmup_epochs * n_steps)), FLAGS.schedule)
    optimizer = training.make_optimizer(schedule, FLAGS.weight_decay)
    crop = max(int(FLAGS.crop_seconds * FLAGS.sample_rate), encoder.min_samples())
    params = encoder.init_params(jax.random.PRNGKey(FLAGS.seed))
    if FLAGS.data_init:
        wav, lens, _, _ = next(training.train_batches(
            train_w, train_y, min(128, len(train_w)), crop, np.random.default_rng([FLAGS.seed, 0])))
        params = training.data_init(encoder, params, wav, lens)
    state = {"params": params, "opt_state": optimizer.init(params), "best_params": params}
    ckpt_dir = os.path.abspath(os.path.join(FLAGS.out, "train_state"))
    mgr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=FLAGS.keep_checkpoints, create=True))
    hist_path = os.path.join(FLAGS.out, "train_history.json")
    history, start = [], 0
    if mgr.latest_step() is not None:
        start = int(mgr.latest_step())
        state = mgr.restore(start, args=ocp.args.StandardRestore(
            jax.tree.map(np.asarray, state)))
        if os.path.exists(hist_path):
            with open(hist_path) as f:
                history = [h for h in json.load(f) if h["epoch"] <= start]
    stopper = training.EarlyStopping.from_history(FLAGS.patience, history)

    step = training.make_train_step(encoder, optimizer)
    predict = training.make_predict(encoder)
    if start:
        dev = training.evaluate(predict, state["params"], encoder, *data["dev"])
        logging.info("resumed from %s at epoch %d", ckpt_dir, start)
        print(f"resumed at epoch {start}: dev loss {dev['loss']:.6f}", flush=True)
    warp = 0.0 if FLAGS.property in SPEAKER_TASKS else FLAGS.augment_warp
    augment = training.Augment(warp=warp, gain_db=FLAGS.augment_gain_db,
                               noise_prob=FLAGS.augment_noise)
    params, opt_state = state["params"], state["opt_state"]
    best_params = state["best_params"]
    epoch = start
    while epoch < FLAGS.epochs and not stopper.should_stop():
        epoch += 1
        rng = np.random.default_rng([FLAGS.seed, epoch])
        bar = tqdm(training.train_batches(train_w, train_y, FLAGS.batch_size, crop, rng,
                                          FLAGS.crops_per_utt, augment),
                   total=n_steps, desc=f"epoch {epoch}/{FLAGS.epochs}",
                   disable=not FLAGS.progress)
        losses = []
        for wav, lens, y, weight in bar:
            params, opt_state, loss, acc = step(params, opt_state, wav, lens, y, weight)
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{float(acc):.2f}")
        dev = training.evaluate(predict, params, encoder, *data["dev"])
        stopper, improved = stopper.update(epoch, dev["accuracy"], dev["loss"])
        if improved:
            best_params = params
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)),
               "dev_accuracy": dev["accuracy"], "dev_loss": dev["loss"], "best": improved,
               "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        logging.info("epoch %d: train loss %.4f, dev accuracy %.4f", epoch, rec["train_loss"],
                     dev["accuracy"])
        print(f"epoch {epoch}: train loss {rec['train_loss']:.4f} dev accuracy "
              f"{dev['accuracy']:.4f}{' *' if improved else ''}", flush=True)
        mgr.save(epoch, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state,
                                                    "best_params": best_params}))
        mgr.wait_until_finished()
        os.makedirs(FLAGS.out, exist_ok=True)
        with open(hist_path, "w") as f:
            json.dump(history, f, indent=1)
    mgr.close()
    if stopper.should_stop():
        print(f"early stop after epoch {epoch}: no better dev accuracy for {FLAGS.patience} "
              f"epochs", flush=True)

    encoder.params = jax.tree.map(np.asarray, best_params)
    test = training.evaluate(predict, encoder.params, encoder, *data["test"])
    majority = training.majority_accuracy(train_y, data["test"][1])
    best = next((h for h in history if h["epoch"] == stopper.best_epoch), None)
    checkpoint.save_encoder(
        FLAGS.out, encoder, classes=list(classes), property=FLAGS.property,
        trained_on=os.path.abspath(FLAGS.manifest), epochs=FLAGS.epochs, epochs_run=epoch,
        best_epoch=stopper.best_epoch, dev_accuracy=best["dev_accuracy"] if best else None,
        test_accuracy=test["accuracy"], majority_accuracy=majority, test_n=test["n"],
        recipe=dict(lr=FLAGS.lr, schedule=FLAGS.schedule, warmup_epochs=FLAGS.warmup_epochs,
                    weight_decay=FLAGS.weight_decay, batch_size=FLAGS.batch_size,
                    crop_seconds=FLAGS.crop_seconds, crops_per_utt=FLAGS.crops_per_utt,
                    augment_warp=warp, data_init=FLAGS.data_init,
                    normalize=FLAGS.normalize,
                    augment_gain_db=FLAGS.augment_gain_db, augment_noise=FLAGS.augment_noise,
                    patience=FLAGS.patience, seed=FLAGS.seed),
        skipped=skipped)
    write_predictions(os.path.join(FLAGS.out, "test_predictions.csv"), kept["test"], classes,
                      data["test"][1], test["predicted"])
    print(f"wrote {FLAGS.out}: test accuracy {test['accuracy']:.4f} ({test['n']} utterances, "
          f"majority {majority:.4f}), best epoch {stopper.best_epoch} of {epoch}, "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    cli.run(main)
