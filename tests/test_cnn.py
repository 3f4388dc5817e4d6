"""The dialect / speaker-ID CNN (Shon et al.): presets, padding, masks, front end vs librosa."""
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from speechinterp.encoders import get_family
from speechinterp.encoders.cnn import CNNConfig, CNNEncoder, features, preset_config


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        t = np.arange(n) / 16000
        w = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(n)
        out.append(w.astype(np.float32))
    return out


@pytest.mark.parametrize("name,filters,pool_dim,n_classes", [
    ("mgb3", (500, 500, 500, 3000), 3000, 5), ("adi17", (1000, 1000, 1000, 1500), 3000, 17)])
def test_presets_shapes(name, filters, pool_dim, n_classes):
    enc = CNNEncoder(config=preset_config(name), family="cnn")
    shapes = enc.param_shapes()
    assert shapes["cnn1/kernel"] == (5, 40, filters[0])
    assert shapes["cnn2/kernel"] == (7, filters[0], filters[1])
    assert shapes["cnn3/kernel"] == (1, filters[1], filters[2])
    assert shapes["cnn4/kernel"] == (1, filters[2], filters[3])
    assert shapes["fc1/kernel"] == (pool_dim, 1500)
    assert shapes["fc2/kernel"] == (1500, 600)
    assert shapes["classifier/kernel"] == (600, n_classes)
    assert enc.layer_names == ["cnn1", "cnn2", "cnn3", "cnn4", "fc1", "fc2"]
    assert get_family("cnn") is CNNEncoder


def test_mgb3_outputs_shapes():
    enc = CNNEncoder.from_preset("mgb3", seed=0)
    w = _waves([8000])
    outs, lens, logits = enc.forward(enc.params, jnp.asarray(w[0][None]), jnp.asarray([8000]))
    assert [int(l[0]) for l in lens] == [51, 25, 25, 25, 1, 1]
    assert [o.shape[-1] for o in outs] == [500, 500, 500, 3000, 1500, 600]
    assert logits.shape == (1, 5)


@pytest.mark.parametrize("preset,overrides", [
    ("tiny", dict(features="logmel", batch_norm=True)),
    ("tiny", dict(features="mfcc", batch_norm=True)),
    ("adi17", dict(filters=(64, 64, 64, 96))),  # ADI17 structure, smaller for speed
    ("mgb3", dict(filters=(32, 32, 32, 64), fc_dims=(48, 24), pad_mode="reflect", vad=True,
                  normalize="sliding_meanvar", cmvn_window=40)),  # released preprocessing
])
def test_padded_batch_equals_single_runs(preset, overrides):
    enc = CNNEncoder.from_preset(preset, seed=3, **overrides)
    if enc.config.batch_norm:  # non-trivial population statistics
        rng = np.random.default_rng(0)
        for k, v in enc.params.items():
            if k.startswith("bn"):
                v["mean"] = rng.normal(0, 0.5, v["mean"].shape).astype(np.float32)
                v["bias"] = rng.normal(0, 0.5, v["bias"].shape).astype(np.float32)
    lengths = (8320, 12000)  # 53 and 76 frames: both parities at the strided conv
    waves = (_waves(lengths) if not enc.config.vad else
             [_bursts(n, i) for i, n in enumerate(lengths)])
    outs, lens = enc.layer_outputs(waves, bucket=True)
    logits = np.asarray(enc.predict_logits(waves))
    for i, w in enumerate(waves):
        single, slens = enc.layer_outputs([w], bucket=False)
        for name, a, la, b, lb in zip(enc.layer_names, outs, lens, single, slens):
            n = int(lb[0])
            assert int(la[i]) == n
            ref = np.asarray(b[0, :n])
            # MFCC inputs are in dB (hundreds), so activations reach ~100: there the 1e-5
            # bound is relative to the layer's largest value (float32 rounding differs between
            # the batch and single shapes); log-mel activations are O(1)-O(10).
            tol = 1e-5 * max(1.0, np.abs(ref).max() / 10)
            assert np.abs(np.asarray(a[i, :n]) - ref).max() < tol, name
            assert not np.any(np.asarray(a[i, n:]))  # padded frames are zero
        one = np.asarray(enc.predict_logits([w]))
        assert np.abs(logits[i] - one[0]).max() < 1e-5 * max(1.0, np.abs(one).max() / 10)


def test_masks_change_only_later_layers():
    enc = CNNEncoder.from_preset("tiny", seed=1)
    waves = _waves([9000, 12000])
    base = enc.hidden_states(waves)
    base_logits = np.asarray(enc.predict_logits(waves))
    ones = {n: np.ones(h.shape[-1], np.float32) for n, h in zip(enc.layer_names, base)}
    for k, name in enumerate(enc.layer_names):
        d = base[k].shape[-1]
        keep = np.ones(d, np.float32)
        keep[: d // 2] = 0
        masks = {**ones, name: keep}  # same pytree structure every time: one compilation
        masked = enc.hidden_states(waves, masks=masks)
        for j in range(k):
            np.testing.assert_array_equal(np.asarray(masked[j]), np.asarray(base[j]))
        assert not np.any(np.asarray(masked[k])[..., : d // 2])
        np.testing.assert_allclose(np.asarray(masked[k])[..., d // 2:],
                                   np.asarray(base[k])[..., d // 2:], atol=1e-6)
        if k + 1 < len(base):
            assert np.abs(np.asarray(masked[k + 1]) - np.asarray(base[k + 1])).max() > 1e-4
        logits = np.asarray(enc.predict_logits(waves, masks=masks))
        assert np.abs(logits - base_logits).max() > 1e-5
    # replacement value instead of zero
    d = base[-1].shape[-1]
    rep = enc.hidden_states(waves, masks={"fc2": (np.zeros(d), 0.5)})
    np.testing.assert_allclose(np.asarray(rep[-1]), 0.5)


def test_masks_for_unknown_layers_are_errors():
    """A misspelt layer name raises (naming it and the real layers) instead of being ignored."""
    enc = CNNEncoder.from_preset("tiny", seed=1)
    waves = _waves([9000])
    d = enc.hidden_states(waves)[0].shape[-1]
    for call in (enc.hidden_states, enc.pooled):
        with pytest.raises(ValueError) as e:
            call(waves, masks={"cnn_1": np.zeros(d), "layer_9": np.zeros(d)})
        assert "['cnn_1', 'layer_9']" in str(e.value)
        assert str(list(enc.layer_names)) in str(e.value)


def test_init_random_differs_and_is_reproducible():
    enc = CNNEncoder.from_preset("tiny", seed=0)
    a, b = enc.init_random(1), enc.init_random(1)
    np.testing.assert_array_equal(a.params["cnn2"]["kernel"], b.params["cnn2"]["kernel"])
    assert np.abs(a.params["cnn2"]["kernel"] - enc.params["cnn2"]["kernel"]).max() > 0


@pytest.mark.parametrize("n", [400, 8000, 12345, 16000])
def test_frontend_matches_librosa(n):
    w = _waves([n], seed=n)[0]
    for feat in ("logmel", "mfcc"):
        cfg = CNNConfig(features=feat)
        f, nfr = features(cfg, jnp.asarray(np.pad(w, (0, 1000))[None]), jnp.asarray([n]))
        if feat == "logmel":
            ref = np.log(np.maximum(librosa.feature.melspectrogram(
                y=w, sr=16000, n_fft=400, hop_length=160, n_mels=40, fmin=133, fmax=6955),
                1e-10)).T
        else:  # as Shon et al.'s prepare_data.py: librosa.feature.mfcc (128 mel bands)
            ref = librosa.feature.mfcc(y=w, sr=16000, n_fft=400, hop_length=160, n_mfcc=40,
                                       fmin=133, fmax=6955).T
        assert int(nfr[0]) == ref.shape[0]
        got = np.asarray(f[0, :ref.shape[0]])
        scale = 1.0 if feat == "logmel" else max(1.0, np.abs(ref).max() / 100)
        # MFCCs reach a few hundred (dB scale): compare relative to 100 dB there
        assert np.abs(got - ref).max() / scale < 1e-4, feat
        assert not np.any(np.asarray(f[0, ref.shape[0]:]))


def test_frontend_normalisation_over_valid_frames():
    w = _waves([8000])[0]
    cfg = CNNConfig(normalize="meanvar")
    f, nfr = features(cfg, jnp.asarray(np.pad(w, (0, 4000))[None]), jnp.asarray([8000]))
    v = np.asarray(f[0, :int(nfr[0])])
    np.testing.assert_allclose(v.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(v.std(0), 1, atol=1e-3)


def _bursts(n, seed):
    """Tone bursts separated by quiet noise, so the energy VAD drops frames. (The noise floor keeps
    the log-mel dynamic range within what float32 FFTs, ours and librosa's, agree on to 1e-4.)"""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = (np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) > -0.2).astype(np.float32)
    w = env * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.02 * rng.standard_normal(n)
    return w.astype(np.float32)


def _reference_released_frontend(w):
    """Shon et al.'s prepare_data.py (logmel 400 160, VAD, cmvn 'mv' over 300 frames), written
    with today's librosa: reflect centre padding as librosa 0.5 did."""
    mel = librosa.feature.melspectrogram(y=w, sr=16000, n_fft=400, hop_length=160, n_mels=40,
                                         fmin=133, fmax=6955, pad_mode="reflect")
    y = np.log(np.maximum(mel, 1e-10)).T.astype(np.float64)
    e = librosa.feature.rms(y=w, frame_length=400, hop_length=160, pad_mode="reflect")[0]
    keep = np.nonzero(e > np.mean(e) / 2 * 1.04)[0]
    if keep.size:
        y = y[keep]
    out = np.empty_like(y)
    for t in range(len(y)):
        win = y[max(0, t - 150):min(len(y), t + 150)]
        out[t] = (y[t] - win.mean(0)) / win.std(0)
    return out


def test_released_model_preprocessing_matches_reference():
    cfg = CNNConfig(pad_mode="reflect", vad=True, normalize="sliding_meanvar")
    waves = [_bursts(n, s) for s, n in enumerate((56000, 23456))]
    batch = np.zeros((2, 56000), np.float32)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = w
    f, nfr = features(cfg, jnp.asarray(batch), jnp.asarray([len(w) for w in waves]))
    for i, w in enumerate(waves):
        ref = _reference_released_frontend(w)
        assert 0 < ref.shape[0] < 1 + len(w) // 160  # the VAD dropped some frames
        assert int(nfr[i]) == ref.shape[0]
        assert np.abs(np.asarray(f[i, :ref.shape[0]]) - ref).max() < 1e-4
        assert not np.any(np.asarray(f[i, ref.shape[0]:]))


def test_masks_of_unknown_layers_or_wrong_length_raise_naming_the_layer():
    enc = CNNEncoder.from_preset("tiny", seed=0, n_classes=2, classes=("a", "b"))
    wave = [np.zeros(16000, np.float32)]
    with pytest.raises(ValueError, match="cnn9"):
        enc.predict_logits(wave, masks={"cnn9": np.ones(4)})
    with pytest.raises(ValueError, match="'cnn1' has 3 entries"):
        enc.pooled(wave, masks={"cnn1": np.ones(3)})
