"""Whether a task CNN learned its own task: its test accuracy against the majority class and
its random-weights copy, with speaker-clustered intervals (the criterion of docs/method.md)."""
from __future__ import annotations

import csv
import os

import numpy as np

from speechinterp.bootstrap import ci_list, cluster_bootstrap_ci


def _random_copy_accuracy(random_dir: str, rows, labels, clusters) -> tuple[float, list]:
    from speechinterp import encoders
    from speechinterp.analysis.bias import predict_classes
    from speechinterp.audio import load_audio
    enc = encoders.load(random_dir)
    waves = [load_audio(r["path"], enc.sample_rate) for r in rows]
    correct = labels == np.array(enc.config.classes)[predict_classes(enc, waves)]
    return float(correct.mean()), ci_list(cluster_bootstrap_ci(correct, clusters))


def task_model_accuracy(encoder_dir: str, prop: str, random_dir: str | None = None) -> dict:
    """The task CNN in ``encoder_dir`` on its own task's test utterances
    (``test_predictions.csv``, written by its training), with a 95% interval clustered by
    speaker, next to the majority baseline and, given ``random_dir``, its random-weights copy on
    the same utterances. It has ``learned`` its task when its interval lies above both the
    majority and the random copy's interval."""
    from speechinterp import checkpoint
    meta = checkpoint.read_encoder_meta(encoder_dir)
    with open(os.path.join(encoder_dir, "test_predictions.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    speakers = [r.get("speaker") or "" for r in rows]
    clusters = speakers if all(speakers) else None
    labels = np.array([r["label"] for r in rows])
    correct = labels == np.array([r["predicted"] for r in rows])
    tm = {"property": prop, "test_utterances": len(rows),
          "test_speakers": len(set(speakers)) if clusters else None,
          "test_accuracy": float(correct.mean()),
          "test_accuracy_ci95": ci_list(cluster_bootstrap_ci(correct, clusters)),
          "majority_accuracy": meta.get("majority_accuracy"),
          "epochs_run": meta.get("epochs_run"), "best_epoch": meta.get("best_epoch"),
          "random_test_accuracy": None, "random_test_accuracy_ci95": None}
    if random_dir:
        tm["random_test_accuracy"], tm["random_test_accuracy_ci95"] = _random_copy_accuracy(
            random_dir, rows, labels, clusters)
    floor = max([tm["majority_accuracy"] or 0.0]
                + ([tm["random_test_accuracy_ci95"][1]] if random_dir else []))
    tm["learned"] = bool(tm["test_accuracy_ci95"][0] > floor)
    return tm
