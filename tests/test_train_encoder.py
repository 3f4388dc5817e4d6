"""Training the CNN from scratch through experiments.train_encoder (absl main, real wav files).

Audio: short wav files written with soundfile; the two classes differ in their spectrum (a
low harmonic tone vs a high band of noise), each file with random pitch, amplitude and length.
"""
import csv
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


def _train(man, out, epochs):
    res = subprocess.run(
        [sys.executable, "-m", "experiments.train_encoder", f"--manifest={man}",
         "--property=timbre", f"--out={out}", "--preset=tiny", f"--epochs={epochs}",
         "--batch_size=8", "--lr=3e-3", "--crop_seconds=0.4", "--noprogress"],
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
    strat = training.assign_splits(labels, None, seed=1)
    for split in ("dev", "test"):
        assert {y for y, s in zip(labels, strat) if s == split} == {"a", "b"}


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
