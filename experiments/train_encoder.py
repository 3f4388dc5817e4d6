"""Train the dialect / speaker-ID CNN from scratch for a property of a manifest.

    python -m experiments.train_encoder --manifest=utterances.csv --property=accent --out=DIR \
        [--preset=mgb3|adi17|tiny] [--epochs=30] [--patience=6] [--batch_size=32] [--lr=3e-3]

The loop is the library's ``speechinterp.train_encoder.train_and_evaluate(config, workdir)``;
this script holds its flags (one per field of ``TrainConfig``, whose defaults they take) and
prints what the run reports.

The manifest is a CSV (or TSV / JSONL, by extension) with columns ``utt_id``, ``path`` (relative
to the manifest's folder or absolute), optional ``split`` (train / dev / test) and property
columns, read by ``speechinterp.corpus.manifest.read_manifest``. Without ``split`` the
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
import dataclasses
import time

from absl import flags

from speechinterp import cli
from speechinterp.encoders.cnn import PRESETS
from speechinterp.train_encoder import TrainConfig, labelled_rows, train_and_evaluate

D = TrainConfig   # the flag defaults are the config's
FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "Manifest CSV (utt_id, path, [split], properties).")
flags.DEFINE_string("property", None, "Property column to classify.")
flags.DEFINE_string("out", None, "Output encoder directory.")
flags.DEFINE_enum("preset", D.preset, sorted(PRESETS), "Architecture preset.")
flags.DEFINE_enum("features", D.features, ["logmel", "mfcc"],
                  "Front end (default: the preset's).")
flags.DEFINE_integer("epochs", D.epochs, "Most epochs (a resumed run continues up to this); the "
                     "cosine schedule spans them.")
flags.DEFINE_integer("patience", D.patience, "Stop after this many epochs without a better dev "
                     "accuracy (0: never stop early).")
flags.DEFINE_integer("batch_size", D.batch_size, "Crops per training step.")
flags.DEFINE_float("lr", D.lr, "Peak learning rate.")
flags.DEFINE_enum("schedule", D.schedule, ["cosine", "constant"], "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", D.warmup_epochs, "Linear warmup (epochs).")
flags.DEFINE_float("weight_decay", D.weight_decay, "AdamW weight decay (0: Adam).")
flags.DEFINE_float("crop_seconds", D.crop_seconds, "Random training segment length (s).")
flags.DEFINE_integer("crops_per_utt", D.crops_per_utt,
                     "Random crops of each training utterance per epoch.")
flags.DEFINE_float("augment_warp", D.augment_warp, "Speed / vocal-tract warp of each crop: "
                   "resampled by a factor in 1 +- this (0: off). Never for speaker identity, "
                   "whose label a warp would change.")
flags.DEFINE_float("augment_gain_db", D.augment_gain_db,
                   "Random gain of each crop, +- dB (0: off).")
flags.DEFINE_float("augment_noise", D.augment_noise,
                   "Probability of white noise (5-30 dB SNR) on a crop.")
flags.DEFINE_enum("normalize", D.normalize, ["preset", "none", "mean", "meanvar", "sliding_mean",
                                             "sliding_meanvar"],
                  "Feature normalisation of the CNN front end (preset: the preset's own). Without "
                  "a normalisation the log-mel offsets keep a CNN trained from scratch from "
                  "learning.")
flags.DEFINE_bool("data_init", D.data_init, "Data-dependent initialisation (unit-variance "
                  "pre-activations per layer, zero classifier; training.data_init).")
flags.DEFINE_list("filters", list(D.filters),
                  "Conv filters, overriding the preset's (e.g. 64,64,64,128).")
flags.DEFINE_list("fc_dims", list(D.fc_dims), "FC sizes, overriding the preset's (e.g. 128,64).")
flags.DEFINE_integer("seed", D.seed, "Seed for initialisation, splits, shuffling and crops.")
flags.DEFINE_integer("sample_rate", D.sample_rate, "Sample rate the encoder runs at.")
flags.DEFINE_integer("keep_checkpoints", D.keep_checkpoints, "Training checkpoints kept.")
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


def config_from_flags() -> TrainConfig:
    """The :class:`TrainConfig` of the flags (one flag per field, of the same name)."""
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)}
    for name in ("filters", "fc_dims"):
        values[name] = tuple(int(v) for v in values[name])
    return TrainConfig(**values)


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
    config = config_from_flags()
    rows = labelled_rows(config)              # the manifest is checked before --out is touched
    check_out(FLAGS.out, FLAGS.overwrite)
    s = train_and_evaluate(config, FLAGS.out, rows=rows, progress=FLAGS.progress,
                           report=lambda line: print(line, flush=True))
    print(f"wrote {FLAGS.out}: test accuracy {s.test_accuracy:.4f} ({s.test_n} utterances, "
          f"majority {s.majority_accuracy:.4f}), best epoch {s.best_epoch} of {s.epochs_run}, "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    cli.run(main)
