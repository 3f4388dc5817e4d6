"""The dialect / speaker-ID CNN (Shon et al.): presets, padding, masks, front end vs librosa."""
import jax
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
    w = _waves([16000])
    outs, lens = enc.apply(enc.params, jnp.asarray(w[0][None]), jnp.asarray([16000]))
    assert [int(l[0]) for l in lens] == [101, 50, 50, 50, 1, 1]
    assert [o.shape[-1] for o in outs] == [500, 500, 500, 3000, 1500, 600]
    logits = enc.classify(enc.params, jnp.asarray(w[0][None]), jnp.asarray([16000]))
    assert logits.shape == (1, 5)


@pytest.mark.parametrize("preset,features_", [("tiny", "logmel"), ("tiny", "mfcc"),
                                              ("adi17", "logmel")])
def test_padded_batch_equals_single_runs(preset, features_):
    overrides = dict(features=features_, batch_norm=preset == "tiny")
    if preset == "adi17":
        overrides.update(filters=(64, 64, 64, 96))  # same structure, smaller for speed
    enc = CNNEncoder.from_preset(preset, seed=3, **overrides)
    if enc.config.batch_norm:  # non-trivial population statistics
        rng = np.random.default_rng(0)
        for k, v in enc.params.items():
            if k.startswith("bn"):
                v["mean"] = rng.normal(0, 0.5, v["mean"].shape).astype(np.float32)
                v["bias"] = rng.normal(0, 0.5, v["bias"].shape).astype(np.float32)
    waves = _waves([7999, 12000, 4321, 16160])
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
    for k, name in enumerate(enc.layer_names):
        d = base[k].shape[-1]
        keep = np.ones(d, np.float32)
        keep[: d // 2] = 0
        masked = enc.hidden_states(waves, masks={name: keep})
        for j in range(k):
            np.testing.assert_array_equal(np.asarray(masked[j]), np.asarray(base[j]))
        assert not np.any(np.asarray(masked[k])[..., : d // 2])
        np.testing.assert_allclose(np.asarray(masked[k])[..., d // 2:],
                                   np.asarray(base[k])[..., d // 2:], atol=1e-6)
        if k + 1 < len(base):
            assert np.abs(np.asarray(masked[k + 1]) - np.asarray(base[k + 1])).max() > 1e-4
        logits = np.asarray(enc.predict_logits(waves, masks={name: keep}))
        assert np.abs(logits - base_logits).max() > 1e-5
    # replacement value instead of zero
    d = base[-1].shape[-1]
    rep = enc.hidden_states(waves, masks={"fc2": (np.zeros(d), 0.5)})
    np.testing.assert_allclose(np.asarray(rep[-1]), 0.5)


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


def test_jit_and_grad():
    enc = CNNEncoder.from_preset("tiny", seed=0)
    w = jnp.asarray(np.stack(_waves([8000, 8000])))
    lens = jnp.asarray([8000, 6000])
    g = jax.grad(lambda p: enc.classify(p, w, lens).sum())(enc.params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))
