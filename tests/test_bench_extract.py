"""Smoke test of experiments/benchmarks/bench_extract.py on a tiny wav2vec2: both pipelines run
and give the same pooled vectors (ours through experiments.extract, the peer through
transformers)."""
import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechinterp import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, "-m", "experiments.benchmarks.bench_extract", *args],
                          cwd=ROOT, capture_output=True, text=True)


def speechlike(seconds, sr, seed):
    """A voiced-like signal: harmonics of a gliding f0 under a syllable-rate envelope, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four files in the built-in corpus layout: 16 kHz mono, one 22.05 kHz, one stereo."""
    d = tmp_path_factory.mktemp("corpus")
    os.makedirs(d / "wav")
    specs = [(1.3, 16000, 1), (2.1, 16000, 1), (1.7, 22050, 1), (0.9, 16000, 2)]
    rows = []
    for i, (sec, sr, ch) in enumerate(specs):
        x = speechlike(sec, sr, i)
        if ch == 2:
            x = np.stack([x, 0.5 * x], 1)
        path = f"wav/u{i}.wav"
        sf.write(d / path, x, sr, subtype="PCM_16")
        rows.append({"utt_id": f"u{i}", "path": path, "speaker": f"s{i % 2}"})
    with open(d / "utterances.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return d


def test_tiny_pipelines_agree(corpus, tmp_path):
    work = tmp_path / "work"
    r = run("--tiny", f"--corpus={corpus}", "--num_utterances=0", "--batch_size=4",
            "--threads=1", f"--workdir={work}")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    m = re.search(r"agreement: max \|ours - PyTorch\| over all pooled vectors = (\S+) at layer "
                  r".*; OK", r.stdout)
    assert m, r.stdout
    printed = float(m.group(1))
    # the printed figure is the real comparison of both pipelines' files
    ours = store.validate(str(work / "ours_warm"))
    assert len(ours) == 4 and ours.layer_names == ["cnn", "layer_0", "layer_1", "layer_2"]
    diffs = []
    for k in range(ours.num_layers):
        ref = np.load(work / "torch_warm" / f"layer_{k}.npy")
        mine = np.asarray(ours.layer(k), np.float32)
        assert ref.shape == mine.shape == (4, 32)
        # not a vacuous match: utterances differ from one another and from zero
        assert np.ptp(ref, axis=0).max() > 1e-2
        diffs.append(np.max(np.abs(mine - ref)))
    assert max(diffs) == pytest.approx(printed, rel=1e-2, abs=1e-9)
    assert printed < 1e-4
    # the cold and warm passes give the same store
    for k in range(ours.num_layers):
        np.testing.assert_array_equal(store.validate(str(work / "ours_cold")).layer(k),
                                      ours.layer(k))
    for p in ("ours", "PyTorch"):
        assert re.search(rf"^{p}.* warm +[\d.]+ +[\d.]+ ", r.stdout, re.M), r.stdout


def test_bad_corpus_and_encoder_are_named(tmp_path):
    r = run(f"--corpus={tmp_path}", "--tiny")
    assert r.returncode != 0 and f"--corpus={tmp_path}: no utterances.csv" in r.stderr
    r = run(f"--encoder={tmp_path}")
    assert r.returncode != 0 and f"--encoder={tmp_path}: not a converted encoder" in r.stderr
