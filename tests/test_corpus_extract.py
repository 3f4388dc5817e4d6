"""Built-in corpus (real espeak-ng speech, codecs), audio validation, resumable extraction."""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from speechinterp import audio, checkpoint, encoders, store
from speechinterp.encoders.cnn import CNNEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args, **kw):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("corpus"))
    r = run("experiments.build_corpus", f"--out={d}", "--size=tiny", "--seed=1")
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def rows_of(d):
    with open(os.path.join(d, "utterances.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_corpus_labels_and_design(corpus):
    rows = rows_of(corpus)
    assert len(rows) == 294
    assert len({r["language"] for r in rows}) >= 10
    assert len({r["accent"] for r in rows if r["accent"]}) >= 6
    assert {r["accent"] for r in rows if r["language"] != "en"} == {""}
    assert {r["gender"] for r in rows} == {"male", "female"}
    channels = {r["channel"] for r in rows}
    assert len(channels) >= 7
    for spk in {r["speaker"] for r in rows}:   # every speaker in every channel
        assert {r["channel"] for r in rows if r["speaker"] == spk} == channels
    split = {}
    for r in rows:                              # splits are speaker-disjoint
        split.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split.values())
    wav, sr = sf.read(os.path.join(corpus, rows[0]["path"]))
    assert sr == 16000 and len(wav) > 8000 and np.abs(wav).max() > 0.05


def test_same_seed_is_byte_identical(corpus, tmp_path):
    r = run("experiments.build_corpus", f"--out={tmp_path}", "--size=tiny", "--seed=1")
    assert r.returncode == 0
    for f in ["utterances.csv"] + [r_["path"] for r_ in rows_of(corpus)[::37]]:
        assert open(os.path.join(corpus, f), "rb").read() == open(tmp_path / f, "rb").read(), f


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"), (b"RIFF not really a wave file", "unreadable audio")])
def test_bad_files_are_named(tmp_path, content, reason):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(audio.AudioError, match=reason) as e:
        audio.load_audio(str(p))
    assert str(p) in str(e.value)


@pytest.mark.parametrize("signal_,reason", [
    (np.zeros(16000), "all samples are zero"), (np.full(16000, np.nan), "non-finite"),
    (np.ones(100) * 0.1, "too short")])
def test_bad_signals_are_named(tmp_path, signal_, reason):
    p = str(tmp_path / "x.wav")
    sf.write(p, signal_.astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=reason):
        audio.load_audio(p)


@pytest.mark.parametrize("rate", [4, 999, 400000])
def test_implausible_sample_rates_are_named_before_resampling(tmp_path, rate):
    p = str(tmp_path / "x.wav")
    sf.write(p, 0.1 * np.random.default_rng(0).standard_normal(20000), rate, subtype="PCM_16")
    with pytest.raises(audio.AudioError, match=f"x.wav: implausible sample rate {rate} Hz"):
        audio.load_audio(p, 16000)


def test_resampling_and_strict_rate(tmp_path):
    p = str(tmp_path / "x.wav")
    sf.write(p, np.sin(np.arange(8000) / 5).astype(np.float32), 8000)
    assert len(audio.load_audio(p, 16000)) == 16000
    with pytest.raises(audio.AudioError, match="sample rate 8000 Hz, expected 16000"):
        audio.load_audio(p, 16000, strict_rate=True)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("enc") / "cnn_tiny")
    checkpoint.save_encoder(d, CNNEncoder.from_preset("tiny", seed=0))
    return d


def manifest_with_bad_files(corpus, d, n=40):
    rows = rows_of(corpus)[:n]
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "empty.wav"), "wb").close()
    sf.write(os.path.join(d, "nan.wav"), np.full(8000, np.nan, np.float32), 16000,
             subtype="FLOAT")
    rows[5] = dict(rows[5], utt_id="bad_empty", path=os.path.join(d, "empty.wav"))
    rows[17] = dict(rows[17], utt_id="bad_nan", path=os.path.join(d, "nan.wav"))
    for r in rows:
        if not os.path.isabs(r["path"]):
            r["path"] = os.path.join(corpus, r["path"])
    m = os.path.join(d, "m.csv")
    with open(m, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return m


def test_extraction_skips_bad_files_and_matches_unbatched(corpus, encoder_dir, tmp_path):
    m = manifest_with_bad_files(corpus, str(tmp_path))
    out = str(tmp_path / "store")
    r = run("experiments.extract", f"--encoder={encoder_dir}", f"--manifest={m}", f"--out={out}",
            "--batch_size=7", "--chunk_size=16")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "empty.wav: empty file" in r.stdout and "nan.wav" in r.stdout
    s = store.open_store(out)
    assert len(s) == 38 and "bad_nan" not in s.column("utt_id")
    skipped = open(os.path.join(out, "skipped.csv")).read()
    assert "bad_empty" in skipped and "bad_nan" in skipped
    enc = encoders.load(encoder_dir)
    for i in (0, 9, 30):   # batched extraction == one utterance at a time
        wav = audio.load_audio(s.utterances[i]["path"], 16000)
        single = enc.pooled([wav])
        for k in range(s.num_layers):
            np.testing.assert_allclose(s.layer(k)[i], np.asarray(single[k][0]), atol=1e-5)


def test_killed_extraction_resumes_to_identical_store(corpus, encoder_dir, tmp_path):
    m = manifest_with_bad_files(corpus, str(tmp_path), n=120)
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    args = [f"--encoder={encoder_dir}", f"--manifest={m}", "--batch_size=8", "--chunk_size=16"]
    assert run("experiments.extract", *args, f"--out={full}").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "experiments.extract", *args, f"--out={part}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = os.path.join(part, ".partial")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:   # wait for a committed chunk
        if os.path.isdir(partial) and _committed_rows(partial) >= 16:   # not a .tmp file
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(part, "meta.json")), "killed run must not finish"
    with pytest.raises(store.StoreError):
        store.open_store(part)
    committed = _committed_rows(partial)
    assert 16 <= committed < 120, committed          # rows were committed before the kill
    r = run("experiments.extract", *args, f"--out={part}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming at row {committed} of 120" in r.stdout   # the rerun skipped them
    for f in ["utterances.csv", "skipped.csv"] + [f"layer_{k}.npy" for k in range(6)]:
        assert open(os.path.join(full, f), "rb").read() == open(os.path.join(part, f), "rb").read()
    with open(os.path.join(part, "skipped.csv"), newline="") as f:
        ids = [row["utt_id"] for row in csv.DictReader(f)]
    assert ids == ["bad_empty", "bad_nan"]                    # no row listed twice


def _committed_rows(partial):
    """End of the contiguous run of committed chunks (chunk_<start>_<stop>.npz)."""
    end = 0
    for a, b in sorted(tuple(int(x) for x in f[6:-4].split("_")) for f in os.listdir(partial)
                       if f.startswith("chunk_") and f.endswith(".npz") and ".tmp" not in f):
        if a != end:
            break
        end = b
    return end


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_extraction_equals_single_process(corpus, encoder_dir, tmp_path):
    """--distributed on two real processes (jax.distributed over localhost, gloo collectives):
    each batch is sharded over both processes' devices, process 0 alone writes the store."""
    m = manifest_with_bad_files(corpus, str(tmp_path), n=40)
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    args = [f"--encoder={encoder_dir}", f"--manifest={m}", "--batch_size=7", "--chunk_size=16"]
    assert run("experiments.extract", *args, f"--out={single}").returncode == 0
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.extract", *args, f"--out={multi}", "--distributed",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    assert "2 devices over 2 processes" in outs[0][0] and "store" not in outs[1][0]
    a, b = store.open_store(single), store.open_store(multi)
    assert a.column("utt_id") == b.column("utt_id") and len(a) == 38
    for k in range(a.num_layers):
        np.testing.assert_allclose(np.asarray(b.layer(k)), np.asarray(a.layer(k)), atol=1e-5)
    assert open(os.path.join(single, "skipped.csv")).read() == \
        open(os.path.join(multi, "skipped.csv")).read()
