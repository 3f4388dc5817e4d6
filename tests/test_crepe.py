"""CREPE port vs torchcrepe 0.0.24's ``Crepe`` model with the real tiny.pth / full.pth weights.

The reference is loaded by tests/references.py (shared with the benchmark case):
torchcrepe's ``decode.py``, ``core.py`` and ``model.py`` file by file, since its package import
needs torchaudio, which does not import with this torch. torch and torchcrepe are required
(installed by .ci/install): without them these tests fail with an error naming what is missing.
The weights are the .pth files of the installed wheel; speech is espeak-ng (tests/ge2e_speech.py).
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402

try:
    import torch
except ImportError as e:  # a required reference: fail, do not skip
    raise ImportError("tests/test_crepe.py needs torch (the test extra): run .ci/install") from e

import references  # noqa: E402
from speechinterp.convert import detect_format, torch_pickle  # noqa: E402
from speechinterp.convert.keys import CheckpointMismatchError  # noqa: E402
from speechinterp.convert.torchcrepe_crepe import convert, params_from_state  # noqa: E402

TOL = 1e-4
pth = references.torchcrepe_weights


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return references.torchcrepe_modules()


@pytest.fixture(scope="module")
def wavs():
    return [espeak_wave("A pitch tracker hears the voice rise and fall.", "en-us"),
            espeak_wave("Hola.", "es")]


def torch_layers(core, model_mod, model, wav):
    """Every block's pooled map [N, L, C] and the output of ``Crepe.forward`` on the frames."""
    net = references.torchcrepe_net(model_mod, model)
    maps, probs = references.torchcrepe_layers(core, net, wav)
    fr = torch.cat(list(core.preprocess(torch.from_numpy(wav)[None], 16000, 160)), 0)
    with torch.no_grad():
        forward = net(fr).numpy()
    assert np.abs(probs.numpy() - forward).max() < 1e-6        # the layer walk is Crepe.forward
    maps = [m[..., 0].permute(0, 2, 1).numpy() for m in maps]     # [N, L, C]
    return maps, forward, fr.shape[0]


def check_model(reference, wavs, model):
    core, model_mod = reference
    enc_mean = convert(pth(model))
    enc_flat = convert(pth(model), within_frame="flatten")
    for w in wavs:
        maps, probs, n = torch_layers(core, model_mod, model, w)
        assert n == 1 + len(w) // 160
        got_m = enc_mean.hidden_states([w])
        got_f = enc_flat.hidden_states([w])
        for k in range(6):
            ref_flat = maps[k].reshape(n, -1)
            err_f = np.abs(np.asarray(got_f[k][0]) - ref_flat).max()
            err_m = np.abs(np.asarray(got_m[k][0]) - maps[k].mean(1)).max()
            # 1e-4, relative where activations exceed 1: full CREPE's second block reaches
            # |x| ~ 120 after 65,536-term sums, whose float32 rounding alone differs by ~1e-3
            # between convolution kernels (max error here 1e-5 of the layer's range)
            scale = max(1.0, float(np.abs(ref_flat).max()))
            assert err_f < TOL * scale and err_m < TOL * scale, (model, k + 1, err_f, err_m)
        for got in (got_m, got_f):
            assert np.abs(np.asarray(got[6][0]) - probs).max() < TOL


def test_tiny_every_layer_matches_torchcrepe(reference, wavs):
    check_model(reference, wavs, "tiny")


@pytest.mark.slow
def test_full_every_layer_matches_torchcrepe(reference, wavs):
    check_model(reference, wavs[1:], "full")


def test_padded_batch_equals_single_runs(wavs):
    enc = convert(pth("tiny"))
    batch = enc.hidden_states(wavs)
    lens = enc.layer_outputs(wavs)[1]
    for i, w in enumerate(wavs):
        single = enc.hidden_states([w])
        for k, (b, s) in enumerate(zip(batch, single)):
            t = int(lens[k][i])
            assert t == s.shape[1] == 1 + len(w) // 160
            assert np.abs(np.asarray(b[i, :t]) - np.asarray(s[0])).max() < 1e-5


def test_masks_act_inside_forward(wavs):
    enc = convert(pth("tiny"))
    base = enc.hidden_states([wavs[1]])
    m = np.ones(16, np.float32)
    m[3] = 0.0
    masked = enc.hidden_states([wavs[1]], masks={"conv2": m})
    assert np.allclose(np.asarray(masked[0]), np.asarray(base[0]))
    assert np.all(np.asarray(masked[1])[..., 3] == 0)
    for k in range(2, 7):
        assert np.abs(np.asarray(masked[k]) - np.asarray(base[k])).max() > 1e-6


def test_format_detection_and_key_errors():
    assert detect_format(pth("tiny")) == "torchcrepe"
    state = dict(torch_pickle.load(pth("tiny")))
    del state["conv3_BN.running_var"]
    state["conv7.weight"] = np.zeros(2, np.float32)
    state["classifier.weight"] = np.zeros((360, 255), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        params_from_state(state, "tiny", "bad.pth")
    msg = str(e.value)
    assert "conv3_BN.running_var" in msg and "conv7.weight" in msg and "classifier.weight" in msg


def test_init_random_runs():
    enc = convert(pth("tiny"))
    rnd = enc.init_random(0)
    outs = rnd.hidden_states([np.random.default_rng(0).normal(size=3200).astype(np.float32)])
    assert [o.shape for o in outs] == [(1, 21, d) for d in (128, 16, 16, 16, 32, 64, 360)]
    assert all(np.isfinite(np.asarray(o)).all() for o in outs)
    import jax
    a, b = jax.tree.leaves(enc.params), jax.tree.leaves(rnd.params)
    assert [x.shape for x in a] == [x.shape for x in b]
    assert any(np.abs(np.asarray(x) - np.asarray(y)).max() > 0 for x, y in zip(a, b))


def test_frame_chunks_equal_one_pass(wavs):
    """Sequential frame chunks (lax.map, last chunk padded) give the one-pass values."""
    import dataclasses

    enc = convert(pth("tiny"), within_frame="flatten")
    w = np.stack([wavs[1][:3000], wavs[0][:3000]])            # 2 x 19 frames: 38 = 5 * 7 + 3
    lens = np.array([3000, 2500])
    one, n_one = enc.apply(enc.params, w, lens)
    enc.config = dataclasses.replace(enc.config, frame_chunk=7)
    chunked, n_chunked = enc.apply(enc.params, w, lens)
    assert one[0].shape[:2] == (2, 19)
    for a, b in zip(one, chunked):
        assert a.shape == b.shape                  # float sums differ with the GEMM sizes
        assert np.abs(np.asarray(a) - np.asarray(b)).max() < TOL
    assert all(np.array_equal(a, b) for a, b in zip(n_one, n_chunked))


def test_missing_torchcrepe_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(references.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"torchcrepe==0\.0\.24.*\.ci/install"):
        references.torchcrepe_modules()
