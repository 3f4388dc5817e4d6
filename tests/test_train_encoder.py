"""Training the CNN from scratch: speechinterp.train_encoder.train_and_evaluate called directly, and
through experiments.train_encoder (absl main, real wav files).

Audio: short wav files written with soundfile; the two classes differ in their spectrum (a
low harmonic tone vs a high band of noise), each file with random pitch, amplitude and length.
"""
import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechinterp import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clip(rng, label, sr=16000):
    n = int(rng.uniform(0.4, 0.9) * sr)
    t = np.arange(n) / sr
    if label == "low":
        f0 = rng.uniform(120, 250)
        w = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in (1, 2, 3))
    else:
        noise = rng.standard_normal(n + 64)
        w = np.convolve(noise, np.cos(np.pi * 0.7 * np.arange(64)) * np.hanning(64), "same")[:n]
    w = w / np.abs(w).max() * rng.uniform(0.1, 0.8) + 0.01 * rng.standard_normal(n)
    return w.astype(np.float32)


def make_manifest(tmp_path, n_per_split=(16, 8, 8)):
    rng = np.random.default_rng(0)
    (tmp_path / "wav").mkdir()
    rows = []
    k = 0
    for split, n in zip(("train", "dev", "test"), n_per_split):
        for i in range(n):
            label = ("low", "high")[i % 2]
            path = f"wav/u{k:03d}.wav"
            sf.write(tmp_path / path, _clip(rng, label), 16000)
            rows.append({"utt_id": f"u{k:03d}", "path": path, "split": split, "timbre": label,
                         "speaker": f"s{k % 5}"})
            k += 1
    # one unreadable file: skipped and listed, the run goes on
    (tmp_path / "wav" / "bad.wav").write_bytes(b"not audio")
    rows.append({"utt_id": "bad", "path": "wav/bad.wav", "split": "train", "timbre": "low",
                 "speaker": "s0"})
    man = tmp_path / "utterances.csv"
    with open(man, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return man


def _train(man, out, epochs, *extra):
    # the two timbres differ in their long-term spectrum, which the default per-utterance CMVN
    # removes by design: the preset's own front end (no normalisation) here
    res = subprocess.run(
        [sys.executable, "-m", "experiments.train_encoder", f"--manifest={man}",
         "--property=timbre", f"--out={out}", "--preset=tiny", f"--epochs={epochs}",
         "--batch_size=8", "--lr=3e-3", "--crop_seconds=0.4", "--normalize=preset",
         "--noprogress", *extra],
        cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_assign_splits_speaker_disjoint():
    labels = [("a", "b")[i % 2] for i in range(60)]
    speakers = [f"s{i % 12}" for i in range(60)]
    splits = training.assign_splits(labels, speakers, seed=1)
    seen = {}
    for s, sp in zip(speakers, splits):
        assert seen.setdefault(s, sp) == sp  # one split per speaker
    assert set(splits) == {"train", "dev", "test"}
    # stratified by each speaker's label (corpus.splits): both labels in every split
    for split in ("train", "dev", "test"):
        assert {y for y, s in zip(labels, splits) if s == split} == {"a", "b"}
    strat = training.assign_splits(labels, None, seed=1)
    for split in ("dev", "test"):
        assert {y for y, s in zip(labels, strat) if s == split} == {"a", "b"}


def test_train_and_evaluate_called_directly(tmp_path):
    """The library function on a tiny manifest: its summary, what it reports and writes, and a
    second call that resumes after the first one's last epoch."""
    from speechinterp.train_encoder import TrainConfig, labelled_rows, train_and_evaluate

    man = make_manifest(tmp_path, n_per_split=(8, 4, 4))
    out = str(tmp_path / "enc")
    config = TrainConfig(manifest=str(man), property="timbre", preset="tiny", epochs=1,
                         batch_size=8, crop_seconds=0.4, normalize="preset")
    lines = []
    summary = train_and_evaluate(config, out, report=lines.append)
    assert len(lines) == 1 and lines[0].startswith("epoch 1: train loss ")
    meta = json.loads(open(os.path.join(out, "config.json")).read())
    hist = json.loads(open(os.path.join(out, "train_history.json")).read())
    assert summary.classes == ("high", "low") == tuple(meta["classes"])
    assert (summary.epochs_run, summary.best_epoch, summary.stopped_early) == (1, 1, False)
    assert summary.test_n == 4 == meta["test_n"]
    assert summary.test_accuracy == meta["test_accuracy"]
    assert summary.dev_accuracy == meta["dev_accuracy"] == hist[0]["dev_accuracy"]
    assert meta["recipe"] == config.recipe() and meta["property"] == "timbre"
    assert len(summary.skipped) == 1 and "bad.wav" in summary.skipped[0]
    assert list(summary.skipped) == meta["skipped"]
    with open(os.path.join(out, "test_predictions.csv"), newline="") as f:
        preds = list(csv.DictReader(f))
    assert [r["utt_id"] for r in preds] == ["u012", "u013", "u014", "u015"]
    assert all(r["path"] == str(tmp_path / "wav" / f"{r['utt_id']}.wav") for r in preds)
    # rows read by the caller (the script checks the manifest before its --out) are the same
    rows = labelled_rows(config)
    again = train_and_evaluate(dataclasses.replace(config, epochs=2), out, rows=rows,
                               report=lines.append)
    assert lines[1] == f"resumed at epoch 1: dev loss {hist[0]['dev_loss']:.6f}"
    assert lines[2].startswith("epoch 2: ") and again.epochs_run == 2
    assert [h["epoch"] for h in json.loads(open(os.path.join(out, "train_history.json")).read())
            ] == [1, 2]
    # a speaker property is never warped
    assert dataclasses.replace(config, property="speaker").recipe()["augment_warp"] == 0.0


@pytest.mark.slow
def test_train_resume_and_load(tmp_path):
    from speechinterp.encoders import load

    man = make_manifest(tmp_path)
    out = tmp_path / "enc"
    first = _train(man, out, epochs=1)
    assert "epoch 1:" in first and "resumed" not in first
    dev_loss_1 = json.loads((out / "train_history.json").read_text())[0]["dev_loss"]
    second = _train(man, out, epochs=6)
    # the restored parameters are epoch 1's: same dev loss as logged after epoch 1
    assert f"resumed at epoch 1: dev loss {dev_loss_1:.6f}" in second
    assert "\nepoch 1:" not in second and "\nepoch 2:" in second and "\nepoch 6:" in second
    hist = json.loads((out / "train_history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert hist[-1]["dev_accuracy"] >= 0.85  # chance is 0.5

    meta = json.loads((out / "config.json").read_text())
    assert meta["classes"] == ["high", "low"] and meta["family"] == "cnn"
    assert any("bad.wav" in s for s in meta["skipped"])
    enc = load(str(out))
    assert enc.layer_names == ["cnn1", "cnn2", "cnn3", "cnn4", "fc1", "fc2"]
    waves = [sf.read(tmp_path / f"wav/u{k:03d}.wav", dtype="float32")[0] for k in (24, 25)]
    hs = enc.hidden_states(waves)
    c = enc.config
    n0 = 1 + max(len(w) for w in waves) // 160
    assert [h.shape for h in hs] == [
        (2, n0, c.filters[0]), (2, n0 // 2, c.filters[1]), (2, n0 // 2, c.filters[2]),
        (2, n0 // 2, c.filters[3]), (2, 1, c.fc_dims[0]), (2, 1, c.fc_dims[1])]
    # the loaded encoder classifies the test clips as the trainer reported
    labels = [c.classes[int(i)] for i in np.asarray(enc.predict_logits(waves)).argmax(-1)]
    assert labels == ["low", "high"]


def test_early_stopping_state():
    acc = [0.2, 0.5, 0.5, 0.4, 0.6, 0.6, 0.55, 0.6]
    loss = [2.0, 1.0, 0.9, 1.2, 0.8, 0.85, 0.9, 0.95]
    st, stops, best = training.EarlyStopping(patience=3), [], []
    for e, (a, l) in enumerate(zip(acc, loss), 1):
        st, improved = st.update(e, a, l)
        best.append(improved)
        stops.append(st.should_stop())
    # epoch 3 ties epoch 2's accuracy with a lower loss: better; epoch 6 ties with a higher loss
    assert best == [True, True, True, False, True, False, False, False]
    assert stops == [False] * 7 + [True]
    assert st.best_epoch == 5 and st.best_accuracy == 0.6
    hist = [{"epoch": e, "dev_accuracy": a, "dev_loss": l}
            for e, (a, l) in enumerate(zip(acc, loss), 1)]
    assert training.EarlyStopping.from_history(3, hist) == st
    assert not training.EarlyStopping.from_history(0, hist).should_stop()   # 0: never


def test_schedule_augment_and_data_init():
    sched = training.make_schedule(1e-2, total_steps=100, warmup_steps=10)
    assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 1e-2) < 1e-9
    assert abs(float(sched(100)) - 1e-4) < 1e-9 and float(sched(50)) < 1e-2
    assert float(training.make_schedule(1e-2, 100, 0, "constant")(70)) == 1e-2
    rng = np.random.default_rng(0)
    aug = training.Augment(warp=0.1, gain_db=6, noise_prob=1.0)
    w = rng.standard_normal(16000).astype(np.float32)
    assert all(len(aug.crop(w, 4000, rng)) == 4000 for _ in range(20))
    assert len(aug.crop(w[:3000], 4000, rng)) <= 3000 * 1.12
    batches = list(training.train_batches([w, w[:5000], w], np.array([0, 1, 0]), 4, 4000, rng,
                                          crops_per_utt=3, augment=aug))
    assert [b[3].sum() for b in batches] == [4, 4, 1]     # 9 crops, weight-0 filler rows
    assert training.majority_accuracy(np.array([0, 0, 1]), np.array([0, 1, 1, 1])) == 0.25

    import jax

    from speechinterp.encoders.cnn import CNNEncoder
    enc = CNNEncoder.from_preset("tiny", seed=0, n_classes=3)
    wav = np.stack([_clip(rng, ("low", "high")[i % 2])[:6400] for i in range(16)])
    lens = np.full(16, 6400, np.int32)
    params = training.data_init(enc, enc.params, wav, lens)
    assert not np.any(params["classifier"]["kernel"])
    feats, frames = enc.features(wav, lens)
    _, inter = enc.module.apply({"params": params}, feats, frames, capture_intermediates=True,
                                mutable=["intermediates"])
    z = np.asarray(inter["intermediates"]["fc1"]["__call__"][0])     # [utterances, units]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-2)
    logits = enc.classify(params, jax.numpy.asarray(wav), jax.numpy.asarray(lens))
    np.testing.assert_allclose(np.asarray(logits), 0)


@pytest.mark.slow
def test_early_stop_keeps_the_best_epoch(tmp_path):
    """A constant, far too large learning rate: the dev accuracy stops improving, training ends
    ``patience`` epochs after the best one, and the saved encoder is that epoch's checkpoint."""
    import orbax.checkpoint as ocp

    from speechinterp import checkpoint
    man = make_manifest(tmp_path)
    out = tmp_path / "enc"
    args = ("--lr=0.3", "--schedule=constant", "--warmup_epochs=0", "--patience=2",
            "--keep_checkpoints=20")
    stdout = _train(man, out, 12, *args)
    hist = json.loads((out / "train_history.json").read_text())
    meta = json.loads((out / "config.json").read_text())
    best = max(hist, key=lambda h: (h["dev_accuracy"], -h["dev_loss"]))
    assert meta["best_epoch"] == best["epoch"] and meta["epochs_run"] == len(hist)
    assert "early stop after epoch" in stdout
    assert meta["epochs_run"] == meta["best_epoch"] + 2 < 12
    assert [h["best"] for h in hist].count(True) >= 1 and not any(
        h["best"] for h in hist if h["epoch"] > meta["best_epoch"])
    assert meta["dev_accuracy"] == best["dev_accuracy"]
    assert {"test_accuracy", "majority_accuracy", "epochs_run", "best_epoch"} <= set(meta)
    saved = checkpoint.load_pytree(str(out / "params"))
    with ocp.CheckpointManager(str(out / "train_state")) as mgr:
        state = mgr.restore(meta["best_epoch"])
    import jax
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a rerun after the early stop trains no further and rewrites the same encoder
    again = _train(man, out, 12, *args)
    assert "\nepoch " not in again and json.loads((out / "config.json").read_text())[
        "best_epoch"] == meta["best_epoch"]
    # test predictions: one row per test utterance, absolute paths, labels by name
    with open(out / "test_predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 8 and list(preds[0]) == ["utt_id", "path", "speaker", "gender", "label",
                                                   "predicted"]
    assert all(os.path.isabs(r["path"]) and r["label"] in ("low", "high") for r in preds)
    acc = np.mean([r["label"] == r["predicted"] for r in preds])
    assert abs(acc - meta["test_accuracy"]) < 1e-9
