"""x-vector / ECAPA-TDNN ports vs SpeechBrain 1.1.2's own modules (PyPI, ``--no-deps``).

References: ``speechbrain.lobes.models.Xvector.Xvector``, ``...ECAPA_TDNN.ECAPA_TDNN``,
``speechbrain.lobes.features.Fbank`` and ``speechbrain.processing.features.InputNormalization``
(sentence), with random weights in the published shapes (spkrec-xvect-voxceleb: 24 mels, TDNN
512-512-512-512-1500, kernels 5/3/3/1/1, dilations 1/2/3/1/1, 512-d; spkrec-ecapa-voxceleb:
80 mels, channels 1024x4 + 3072, kernels 5/3/3/3/1, dilations 1/2/3/4/1, attention 128, 192-d)
and BatchNorm running statistics randomised too, on espeak-ng speech (tests/ge2e_speech.py).

torchaudio: speechbrain imports it at module level (nnet/CNN.py, processing/vocal_features.py,
utils/torch_audio_backend.py via dataio/dataio.py), and no torchaudio on PyPI loads with this
torch (2.13.0+cpu). The tested path never calls it: CNN.py uses it only in ``GaborConv1d``'s
mel initialisation, vocal_features.py only for resampling / lfilter of vocal features, and the
backend check only reads attributes. So the modules are imported with a bare stand-in module
in ``sys.modules["torchaudio"]`` whose every attribute access raises ``AttributeError``
(``speechbrain_modules`` of tests/references.py), removed again right after the import:
any use on the tested path would raise.

``StatisticsPooling`` (x-vector) adds random noise in [1e-5, 9e-5] to the mean on every call,
eval mode included; the reference's noise is set to zero here (the port is deterministic).

Tolerances: network layers fed with SpeechBrain's own normalised features match within 1e-4
absolute, or 2e-6 relative to the layer's largest magnitude where that is larger (ECAPA's
block0..3 reach ~70: float32 accumulation over a fan-in of 400 features of up to +-50 dB gives
~5e-5 in the first conv alone; measured worst 8.4e-5 absolute). Through the waveform, the Fbank's float32 FFT rounding
(about 5e-4 dB on bands 40+ dB below a frame's peak, in torch and in jnp alike, against a
float64 reference) propagates, so Fbank and end-to-end checks are relative: max abs diff
<= 1e-4 * max(1, max |reference|) per layer.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402

try:  # required references (installed by .ci/install): fail, do not skip
    import torch
except ImportError as e:
    raise ImportError("tests/test_tdnn.py needs torch (the test extra): run .ci/install") from e
if __import__("importlib").util.find_spec("speechbrain") is None:
    raise ModuleNotFoundError("tests/test_tdnn.py needs the reference speechbrain==1.1.2: run "
                              ".ci/install (pip install --no-deps speechbrain==1.1.2 hyperpyyaml)")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from references import build_reference, speechbrain_modules, torch_layers  # noqa: E402
from speechinterp import checkpoint, encoders  # noqa: E402
from speechinterp.convert import detect_format  # noqa: E402
from speechinterp.convert import speechbrain_tdnn as sbc  # noqa: E402
from speechinterp.convert.keys import CheckpointMismatchError  # noqa: E402
from speechinterp.encoders import fbank as F  # noqa: E402
from speechinterp.encoders.tdnn import ECAPAConfig, XvectorConfig  # noqa: E402

TOL = 1e-4
FEATURE_REL = 2e-6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PUBLISHED = {"xvector": {}, "ecapa": {"channels": [1024, 1024, 1024, 1024, 3072]}}
TINY = {
    "xvector": dict(n_mels=24, tdnn_blocks=4, tdnn_channels=[32, 32, 48, 64],
                    tdnn_kernel_sizes=[5, 3, 3, 1], tdnn_dilations=[1, 2, 3, 1], lin_neurons=16),
    # widths change (1x1 shortcut), grouped convs, no global context
    "ecapa": dict(n_mels=24, channels=[32, 48, 48, 48, 96], kernel_sizes=[5, 3, 3, 3, 1],
                  dilations=[1, 2, 3, 4, 1], attention_channels=16, res2net_scale=4,
                  se_channels=8, global_context=False, groups=[1, 2, 2, 2, 1], lin_neurons=12),
}
TINY_ECAPA_GC = dict(TINY["ecapa"], global_context=True, groups=[1, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def speech():
    """Three utterances of different lengths (about 2.6 s, 1.2 s, 1.9 s)."""
    return [espeak_wave("The quick brown fox jumps over the lazy dog.", "en-us"),
            espeak_wave("Good morning, everyone.", "en-gb-x-rp"),
            espeak_wave("Where is the railway station, please?", "en-us+f2")]


def _config_kwargs(family, kw):
    """Reference constructor kwargs -> our config kwargs (through the converter's tables)."""
    table = sbc._XVECTOR_ARGS if family == "xvector" else sbc._ECAPA_ARGS
    out = {}
    for k, v in kw.items():
        out[table.get(k, k)] = v
    return out


def _pair(family, kw, seed=0):
    """SpeechBrain model (random weights + BN stats) and our encoder with the same weights."""
    import torch

    kw = dict(kw)
    n_mels = kw.pop("n_mels", 24 if family == "xvector" else 80)
    model, fbank, norm, probes = build_reference(family, seed, n_mels=n_mels, **kw)
    cfg_cls, enc_cls = sbc.FAMILIES[family]
    cfg = cfg_cls(n_mels=n_mels, **_config_kwargs(family, kw))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    enc = enc_cls(config=cfg, params=sbc.params_from_state(state, family, cfg), family=family)
    return model, fbank, norm, probes, enc


def _reference_single(family, model, fbank, norm, probes, wav):
    """SpeechBrain on one utterance: (normalised features [1, T, M], every probed layer)."""
    with torch.no_grad():
        feats = norm(fbank(torch.from_numpy(wav)[None]), torch.ones(1))
    return feats.numpy(), [r.numpy() for r in torch_layers(family, model, probes, feats,
                                                              torch.ones(1))]


def _batch(wavs):
    lens = np.array([len(w) for w in wavs], np.int32)
    out = np.full((len(wavs), lens.max() + 800), 0.3, np.float32)   # non-zero junk as padding
    for i, w in enumerate(wavs):
        out[i, :len(w)] = w
    return out, lens


def _check_layers(enc, family, ref_model, wavs, tol_abs=TOL):
    """Padded batch through our features path and waveform path vs SpeechBrain single runs."""
    model, fbank, norm, probes = ref_model
    singles = [_reference_single(family, model, fbank, norm, probes, w) for w in wavs]
    # features path: SpeechBrain's normalised features, padded with large junk
    t_max = max(f.shape[1] for f, _ in singles) + 7
    feats = np.full((len(wavs), t_max, enc.config.n_mels), 1e3, np.float32)
    n = np.array([f.shape[1] for f, _ in singles], np.int32)
    for i, (f, _) in enumerate(singles):
        feats[i, :n[i]] = f[0]
    outs_f, lens_f = jax.jit(enc.apply_features)(enc.params, jnp.asarray(feats), jnp.asarray(n))
    batch, lens = _batch(wavs)
    outs_w, lens_w = jax.jit(enc.apply)(enc.params, jnp.asarray(batch), jnp.asarray(lens))
    worst_f, worst_w = {}, {}
    for k, name in enumerate(enc.layer_names):
        for i, (_, ref) in enumerate(singles):
            r = ref[k][0]
            t = r.shape[0]
            assert int(lens_f[k][i]) == t and int(lens_w[k][i]) == t, (name, i)
            d_f = np.abs(np.asarray(outs_f[k][i, :t]) - r).max()
            d_w = np.abs(np.asarray(outs_w[k][i, :t]) - r).max()
            big = float(np.abs(r).max())
            assert d_f <= max(TOL, FEATURE_REL * big), f"{name} utt {i}: features path {d_f:.2e}"
            assert d_w <= TOL * max(1.0, big), f"{name} utt {i}: waveform path {d_w:.2e} ({big})"
            assert not np.any(np.asarray(outs_w[k][i, t:])), f"{name}: padding not zeroed"
            worst_f[name] = max(worst_f.get(name, 0), float(d_f))
            worst_w[name] = max(worst_w.get(name, 0), float(d_w) / max(1.0, big))
    return (worst_f, worst_w), outs_w


# ---------------------------------------------------------------------------------------
def test_speechbrain_import_leaves_no_torchaudio_behind():
    speechbrain_modules()
    assert "torchaudio" not in sys.modules


@pytest.mark.parametrize("n_mels", [24, 80])
def test_fbank_and_sentence_norm_match_speechbrain(speech, n_mels):
    _, _, Fbank, InputNormalization = speechbrain_modules()
    fbank = Fbank(n_mels=n_mels)
    batch, lens = _batch(speech)
    ours, n = F.fbank(jnp.asarray(batch), jnp.asarray(lens), n_mels=n_mels)
    ours_n = F.sentence_norm(ours, n)
    ours_s = F.sentence_norm(ours, n, std_norm=True)
    for i, w in enumerate(speech):
        with torch.no_grad():
            ref = fbank(torch.from_numpy(w)[None])
            ref_n = InputNormalization(norm_type="sentence", std_norm=False)(ref, torch.ones(1))
            ref_s = InputNormalization(norm_type="sentence", std_norm=True)(ref, torch.ones(1))
        t = ref.shape[1]
        assert int(n[i]) == t
        for o, r in ((ours, ref), (ours_n, ref_n), (ours_s, ref_s)):
            r = r.numpy()[0]
            assert np.abs(np.asarray(o[i, :t]) - r).max() <= TOL * max(1, np.abs(r).max())
        assert not np.any(np.asarray(ours_n[i, t:]))


def test_xvector_published_shape_matches_speechbrain(speech):
    model, fbank, norm, probes, enc = _pair("xvector", PUBLISHED["xvector"])
    assert enc.layer_names == ["tdnn1", "tdnn2", "tdnn3", "tdnn4", "tdnn5", "pooling",
                               "embedding"]
    worst, outs = _check_layers(enc, "xvector", (model, fbank, norm, probes), speech)
    assert [o.shape[-1] for o in outs] == [512, 512, 512, 512, 1500, 3000, 512]
    print("xvector max abs diffs (features path), max rel diffs (waveform path):",
          *({k: f"{v:.1e}" for k, v in w.items()} for w in worst))


@pytest.mark.slow
def test_ecapa_published_shape_matches_speechbrain(speech):
    model, fbank, norm, probes, enc = _pair("ecapa", PUBLISHED["ecapa"])
    assert sum(p.numel() for p in model.parameters()) > 20e6
    assert enc.layer_names == ["block0", "block1", "block2", "block3", "mfa", "pooling",
                               "embedding"]
    worst, outs = _check_layers(enc, "ecapa", (model, fbank, norm, probes), speech)
    assert [o.shape[-1] for o in outs] == [1024, 1024, 1024, 1024, 3072, 6144, 192]
    print("ecapa max abs diffs (features path), max rel diffs (waveform path):",
          *({k: f"{v:.1e}" for k, v in w.items()} for w in worst))


@pytest.mark.parametrize("family,kw", [("xvector", TINY["xvector"]),
                                       ("xvector", dict(TINY["xvector"],
                                                        activation=torch.nn.ReLU)),
                                       ("ecapa", TINY["ecapa"]), ("ecapa", TINY_ECAPA_GC)])
def test_tiny_configs_match_speechbrain(speech, family, kw):
    kw = dict(kw)
    act = kw.pop("activation", None)
    ref_kw = dict(kw, **({"activation": act} if act is not None else {}))
    model, fbank, norm, probes = build_reference(family, 1, **ref_kw)
    cfg_cls, enc_cls = sbc.FAMILIES[family]
    cfg = cfg_cls(**_config_kwargs(family, kw),
                  **({"activation": "relu"} if act is not None else {}))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    enc = enc_cls(config=cfg, params=sbc.params_from_state(state, family, cfg), family=family)
    _check_layers(enc, family, (model, fbank, norm, probes), speech)


def test_padded_batch_equals_single_runs(speech):
    """Utterances alone vs in a padded batch (reflect padding at each utterance's own end)."""
    cfg = ECAPAConfig(**_config_kwargs("ecapa", TINY_ECAPA_GC))
    enc = encoders.get_family("ecapa")(config=cfg, family="ecapa").init_random(3)
    batch, lens = _batch(speech)
    outs, out_lens = enc.layer_outputs(batch, lens)
    for i, w in enumerate(speech):
        single, single_lens = enc.layer_outputs([w])
        for k, name in enumerate(enc.layer_names):
            t = int(single_lens[k][0])
            assert int(out_lens[k][i]) == t
            a, b = np.asarray(outs[k][i, :t]), np.asarray(single[k][0, :t])
            assert np.abs(a - b).max() <= 1e-5 * max(1, np.abs(b).max()), (name, i)


def test_masks_change_only_later_layers(speech):
    for family, kw, layer in (("xvector", TINY["xvector"], "tdnn3"),
                              ("ecapa", TINY_ECAPA_GC, "block2"),
                              ("ecapa", TINY_ECAPA_GC, "pooling")):
        cfg = sbc.FAMILIES[family][0](**_config_kwargs(family, kw))
        enc = encoders.get_family(family)(config=cfg, family=family).init_random(0)
        names = enc.layer_names
        k = names.index(layer)
        d = enc.layer_outputs([speech[1]])[0][k].shape[-1]
        mask = np.ones(d, np.float32)
        mask[: d // 2] = 0
        base = enc.layer_outputs([speech[1]])[0]
        masked = enc.layer_outputs([speech[1]], masks={layer: mask})[0]
        for j, name in enumerate(names):
            a, b = np.asarray(base[j]), np.asarray(masked[j])
            if j < k:
                np.testing.assert_array_equal(a, b, err_msg=f"{family} {name}")
            elif j == k:
                assert not np.any(b[..., : d // 2])
                np.testing.assert_allclose(b[..., d // 2:], a[..., d // 2:], atol=1e-6)
            else:
                assert np.abs(a - b).max() > 1e-4, f"{family}: {name} ignores the {layer} mask"


def test_init_random_same_architecture(speech):
    for family, kw in (("xvector", PUBLISHED["xvector"]), ("ecapa", TINY["ecapa"])):
        cfg = sbc.FAMILIES[family][0](**_config_kwargs(family, kw))
        shapes = sbc.expected_shapes(family, cfg)
        fake = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
        conv = sbc.FAMILIES[family][1](config=cfg, params=sbc.params_from_state(fake, family,
                                                                                 cfg))
        r0, r0b, r1 = conv.init_random(0), conv.init_random(0), conv.init_random(1)
        assert (jax.tree.map(np.shape, r0.params) == jax.tree.map(np.shape, conv.params))
        same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), r0.params, r0b.params)
        assert all(jax.tree.leaves(same))
        e0 = r0.pooled([speech[0]])[-1]
        e1 = r1.pooled([speech[0]])[-1]
        assert np.all(np.isfinite(e0)) and np.abs(np.asarray(e0) - np.asarray(e1)).max() > 1e-3


# ---------------------------------------------------------------------------------------
# conversion
# the part of the published hyperparams.yaml files that x-vector and ECAPA share
_HPARAMS_TAIL = """\
mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""

XVECTOR_YAML = """\
# ############################################################################
# Model: xvector for Speaker verification (the published spkrec-xvect-voxceleb layout)
# ############################################################################

# Feature parameters
n_mels: 24

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-xvect-voxceleb

# Output parameters
out_n_neurons: 7205

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [512, 512, 512, 512, 1500]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 512

classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 512]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: 512
    out_neurons: !ref <out_n_neurons>

""" + _HPARAMS_TAIL

ECAPA_YAML = """\
# ############################################################################
# Model: ECAPA big for Speaker verification (the published spkrec-ecapa-voxceleb layout)
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: 7205

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [@C@, @C@, @C@, @C@, @M@]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: @A@
    lin_neurons: @L@
@EXTRA@
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: @L@
    out_neurons: !ref <out_n_neurons>

""" + _HPARAMS_TAIL


def _ecapa_yaml(c=1024, a=128, lin=192, extra="", mfa=None):
    return (ECAPA_YAML.replace("@C@", str(c)).replace("@M@", str(mfa or 3 * c)).replace("@A@", str(a))
            .replace("@L@", str(lin)).replace("@EXTRA@", extra))


def _write_dir(path, model, yaml_text):
    os.makedirs(path, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(path, "embedding_model.ckpt"))
    with open(os.path.join(path, "hyperparams.yaml"), "w") as f:
        f.write(yaml_text)
    # the other files of a published directory are present and ignored
    torch.save({"count": 3, "glob_mean": torch.zeros(8), "glob_std": torch.ones(8)},
               os.path.join(path, "mean_var_norm_emb.ckpt"))
    torch.save({"weight": torch.zeros(5, 8)}, os.path.join(path, "classifier.ckpt"))
    with open(os.path.join(path, "label_encoder.txt"), "w") as f:
        f.write("'id10001' => 0\n")


def test_published_hyperparams_parse():
    family, kw = sbc.config_from_hparams(_write_text(XVECTOR_YAML))
    assert family == "xvector" and XvectorConfig(**kw) == XvectorConfig()
    family, kw = sbc.config_from_hparams(_write_text(_ecapa_yaml()))
    assert family == "ecapa" and ECAPAConfig(**kw) == ECAPAConfig()
    # !ref with arithmetic and nested references, !tuple / !apply tolerated
    extra = ("width: 16\nmfa: !ref <width> * 3\nembedding_model: "
             "!new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN\n"
             "    input_size: !ref <n_mels>\n    channels: [!ref <width>, !ref <width>, "
             "!ref <width>, !ref <mfa>]\n    kernel_sizes: !tuple (5, 3, 3, 1)\n"
             "    dilations: [1, 2, 3, 1]\n    groups: [1, 1, 1, 1]\n"
             "    res2net_scale: !ref <width> // 8\n"
             "seed: !apply:torch.manual_seed [1986]\n")
    base = _ecapa_yaml().split("embedding_model:")[0]
    family, kw = sbc.config_from_hparams(_write_text(base + extra))
    assert kw["channels"] == [16, 16, 16, 48] and kw["res2net_scale"] == 2
    with pytest.raises(ValueError, match="norm_type 'global'"):
        sbc.config_from_hparams(_write_text(XVECTOR_YAML.replace("norm_type: sentence",
                                                                 "norm_type: global")))


def _write_text(text):
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_conversion_round_trip_cli(tmp_path, speech):
    """Published-style x-vector directory -> `python -m experiments.convert` -> load."""
    model, fbank, norm, probes = build_reference("xvector", 2)
    src = str(tmp_path / "spkrec-xvect")
    _write_dir(src, model, XVECTOR_YAML)
    assert detect_format(src) == "speechbrain"
    out = str(tmp_path / "converted")
    res = subprocess.run([sys.executable, "-m", "experiments.convert", f"--source={src}",
                          f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert res.returncode == 0, res.stderr[-3000:]
    enc = encoders.load(out)
    assert enc.family == "xvector" and enc.config == XvectorConfig()
    assert enc.source_sha256 == checkpoint.sha256_of(os.path.join(src, "embedding_model.ckpt"))
    _, ref = _reference_single("xvector", model, fbank, norm, probes, speech[2])
    got = enc.hidden_states([speech[2]])
    for name, g, r in zip(enc.layer_names, got, ref):
        assert np.abs(np.asarray(g) - r).max() <= TOL * max(1, np.abs(r).max()), name


def test_conversion_ecapa_directory_and_explicit_file(tmp_path, speech):
    kw = dict(channels=[32, 32, 32, 32, 96], attention_channels=16, lin_neurons=12,
              res2net_scale=4, se_channels=8)
    model, fbank, norm, probes = build_reference("ecapa", 4, **kw)
    extra = "    res2net_scale: 4\n    se_channels: 8\n    activation: !name:torch.nn.ReLU\n"
    src = str(tmp_path / "spkrec-ecapa")
    _write_dir(src, model, _ecapa_yaml(32, 16, 12, extra))
    enc = sbc.convert(src)
    assert enc.family == "ecapa" and enc.config.channels == (32, 32, 32, 32, 96)
    checkpoint.save_encoder(str(tmp_path / "out"), enc)
    loaded = encoders.load(str(tmp_path / "out"))
    _, ref = _reference_single("ecapa", model, fbank, norm, probes, speech[0])
    for name, g, r in zip(loaded.layer_names, loaded.hidden_states([speech[0]]), ref):
        assert np.abs(np.asarray(g) - r).max() <= TOL * max(1, np.abs(r).max()), name
    # the checkpoint file alone: family from the option (or the keys), shapes from options
    lone = str(tmp_path / "lone")
    os.makedirs(lone)
    os.replace(os.path.join(src, "embedding_model.ckpt"), os.path.join(lone, "model.ckpt"))
    ckpt = os.path.join(lone, "model.ckpt")
    assert detect_format(ckpt) == "speechbrain"
    opts = dict(channels="[32, 32, 32, 32, 96]", attention_channels="16", lin_neurons="12",
                res2net_scale="4", se_channels="8")
    enc2 = sbc.convert(ckpt, family="ecapa", **opts)
    assert enc2.config == enc.config
    assert sbc.convert(ckpt, **opts).family == "ecapa"
    with pytest.raises(CheckpointMismatchError):       # published defaults do not fit
        sbc.convert(ckpt, family="ecapa")


def test_mismatched_checkpoint_lists_keys(tmp_path):
    model, *_ = build_reference("ecapa", 0, **dict(TINY_ECAPA_GC, n_mels=24))
    state = model.state_dict()
    del state["blocks.2.se_block.conv1.conv.weight"]
    state["blocks.1.extra.weight"] = torch.zeros(3)
    state["fc.conv.weight"] = torch.zeros(5, 192, 1)
    src = str(tmp_path / "bad")
    os.makedirs(src)
    torch.save(state, os.path.join(src, "embedding_model.ckpt"))
    opts = _config_kwargs("ecapa", TINY_ECAPA_GC)
    with pytest.raises(CheckpointMismatchError) as err:
        sbc.convert(os.path.join(src, "embedding_model.ckpt"), family="ecapa",
                    **{k: str(v) for k, v in opts.items()})
    msg = str(err.value)
    assert "missing (1): blocks.2.se_block.conv1.conv.weight" in msg
    assert "unexpected (1): blocks.1.extra.weight" in msg
    assert "fc.conv.weight: file (5, 192, 1) vs expected (12, 192, 1)" in msg
