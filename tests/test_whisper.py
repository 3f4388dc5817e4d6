"""The Flax Whisper encoder against transformers' PyTorch ``WhisperEncoder`` and feature extractor.

Tiny random configs of the two front-end variants (80 mel bins: tiny ... large-v2; 128 mel bins:
large-v3) with every parameter perturbed (so no LayerNorm is the identity and no bias is zero),
and a short window (``max_source_positions`` 100 / 150, i.e. 2 s / 3 s) so that the reference runs
on exactly the input it expects. Real speech from espeak-ng. Real Whisper tiny weights are
checked against ctranslate2 in ``test_whisper_ct2.py``.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from speechinterp import encoders
from speechinterp.convert import ConvertOptionError, convert, detect_format
from speechinterp.convert.huggingface_whisper import whisper_encoder_from_state
from speechinterp.convert.keys import CheckpointMismatchError
from speechinterp.encoders.whisper_frontend import log_mel

sys.path.insert(0, os.path.dirname(__file__))
from ge2e_speech import espeak_wave  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4
VARIANTS = {
    "mel80": dict(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                  encoder_ffn_dim=48, max_source_positions=100),
    "mel128_gelu_new": dict(num_mel_bins=128, d_model=24, encoder_layers=3,
                            encoder_attention_heads=2, encoder_ffn_dim=40,
                            max_source_positions=150, activation_function="gelu_new"),
}
TOKENS = dict(vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
              decoder_start_token_id=3, decoder_layers=1, decoder_attention_heads=2,
              decoder_ffn_dim=16, max_target_positions=16)


@pytest.fixture(scope="module")
def speech():
    a = espeak_wave("The quick brown fox jumps over the lazy dog near the river bank.", "en-us")
    b = espeak_wave("Das ist ein kurzer Satz.", "de")
    return a, b


def batch_of(speech, lengths):
    """Utterances of the given lengths cut from real speech (repeated when too short)."""
    src = np.concatenate(speech * 4)
    return [src[i * 997:i * 997 + n].copy() for i, n in enumerate(lengths)]


def hf_config(name, **overrides):
    return transformers.WhisperConfig(**{**VARIANTS[name], **overrides}, **TOKENS)


def hf_encoder(name, seed=0):
    torch.manual_seed(seed)
    enc = HFWhisperEncoder(hf_config(name)).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return enc


def state_numpy(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def to_flax(enc, **options):
    cfg = {k: getattr(enc.config, k) for k in VARIANTS["mel80"]}
    cfg["activation_function"] = enc.config.activation_function
    return whisper_encoder_from_state(cfg, state_numpy(enc), source="test", source_sha256=None,
                                      **options)


def feature_extractor(cfg):
    chunk_s = 2 * cfg.max_source_positions * 160 // 16000
    return transformers.WhisperFeatureExtractor(feature_size=cfg.num_mel_bins,
                                                chunk_length=chunk_s)


def hf_layers_padded(enc, waves):
    """HF hidden states (30 s-style window) + the convolutions' output, for a batch."""
    feats = feature_extractor(enc.config)(waves, sampling_rate=16000, return_tensors="pt")
    captured = {}
    hook = enc.conv2.register_forward_hook(lambda m, i, o: captured.__setitem__("c", o))
    with torch.no_grad():
        out = enc(feats["input_features"], output_hidden_states=True)
    hook.remove()
    cnn = torch.nn.functional.gelu(captured["c"]).transpose(1, 2)
    return [cnn.numpy()] + [h.numpy() for h in out.hidden_states]


def hf_layers_native(enc, wave):
    """HF's own modules on one utterance at its native length (no padding to the window)."""
    fe = feature_extractor(enc.config)
    x = fe(wave, sampling_rate=16000, return_tensors="pt", padding="longest")["input_features"]
    gelu = torch.nn.functional.gelu
    with torch.no_grad():
        cnn = gelu(enc.conv2(gelu(enc.conv1(x)))).transpose(1, 2)
        h = cnn + enc.embed_positions.weight[:cnn.shape[1]]
        outs = [cnn, h]
        for i, layer in enumerate(enc.layers):
            h = layer(h, None)
            h = h[0] if isinstance(h, tuple) else h
            outs.append(enc.layer_norm(h) if i == len(enc.layers) - 1 else h)
    return [o[0].numpy() for o in outs]


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ------------------------------------------------------------------------------- front end

@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(speech, n_mels):
    waves = list(speech)
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    width = max(len(w) for w in waves)
    batch = np.stack([np.pad(w, (0, width - len(w))) for w in waves])
    lens = jnp.array([len(w) for w in waves])
    ref = fe(waves, sampling_rate=16000, return_tensors="np")["input_features"]
    ours, n = log_mel(jnp.asarray(batch), lens, n_mels, pad_to_chunk=True, chunk_samples=480000)
    assert ours.shape == (2, 3000, n_mels)
    assert max_diff(np.asarray(ours).transpose(0, 2, 1), ref) < TOL
    assert list(np.asarray(n)) == [len(w) // 160 for w in waves]
    native, n = log_mel(jnp.asarray(batch), lens, n_mels, pad_to_chunk=False,
                        chunk_samples=480000)
    for i, w in enumerate(waves):
        r = fe(w, sampling_rate=16000, return_tensors="np", padding="longest")["input_features"][0]
        assert r.shape[1] == int(n[i])
        assert max_diff(np.asarray(native[i, :n[i]]).T, r) < TOL
        assert not np.asarray(native[i, n[i]:]).any()
    # away from the utterance's end (reflect vs zero padding) both modes give the same frames
    assert max_diff(native[1, :n[1] - 2], ours[1, :n[1] - 2]) < TOL


# --------------------------------------------------------------------------------- encoder

@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_layer_matches_transformers_padded_window(speech, name):
    """Reference mode: each utterance of a batch (one longer than the window) vs HF."""
    enc = hf_encoder(name)
    ours = to_flax(enc)
    chunk = ours.config.chunk_samples
    waves = batch_of(speech, (chunk - 4321, 7000, chunk + 5000))
    outs, lens = ours.layer_outputs(waves)
    assert ours.layer_names == ["cnn"] + [f"layer_{i}" for i in range(len(enc.layers) + 1)]
    t = ours.config.max_source_positions
    assert [int(x) for x in lens[0]] == [(min(len(w), chunk) // 160 + 1) // 2 for w in waves]
    for row, wave in enumerate(waves):          # alone, as HF runs it
        ref = hf_layers_padded(enc, [wave])
        assert len(ref) == len(outs)
        for k, (a, b) in enumerate(zip(outs, ref)):
            assert a.shape[1:] == b.shape[1:] and a.shape[1] == t
            assert max_diff(a[row], b[0]) < TOL, (name, row, ours.layer_names[k])
    ref = hf_layers_padded(enc, waves)          # and HF's own batch
    assert max(max_diff(a, b) for a, b in zip(outs, ref)) < TOL


@pytest.mark.parametrize("name,query_block", [("mel128_gelu_new", 256), ("mel80", 256),
                                              ("mel80", 16)])
def test_native_length_padded_batch_equals_each_alone(speech, name, query_block, monkeypatch):
    """Also with CPU blocked attention (query blocks of 16, the last one padded)."""
    from speechinterp.encoders import wav2vec2
    monkeypatch.setattr(wav2vec2, "QUERY_BLOCK", query_block)
    enc = hf_encoder(name, seed=1)
    ours = to_flax(enc, pad_to_30s=False)
    waves = batch_of(speech, (5003, 12800, 16000 + 777))
    outs, lens = ours.layer_outputs(waves)
    for row, wave in enumerate(waves):
        ref = hf_layers_native(enc, wave)
        n = int(lens[0][row])
        assert n == ref[0].shape[0] == (len(wave) // 160 + 1) // 2
        for k, (a, b) in enumerate(zip(outs, ref)):
            assert max_diff(a[row, :n], b) < TOL, (name, row, ours.layer_names[k])
        alone, _ = ours.layer_outputs([wave], bucket=False)
        assert max(max_diff(a[0, :n], b[row, :n]) for a, b in zip(alone, outs)) < TOL
    pooled = ours.pooled(waves)
    assert all(p.shape == (3, ours.config.d_model) for p in pooled)


def test_blocked_attention_equals_one_softmax():
    """The CPU path for long inputs (blocks of queries, one utterance at a time) vs the plain
    [B, H, T, T] softmax, with padded keys; float32."""
    from speechinterp.encoders import wav2vec2
    cfg = wav2vec2.Wav2Vec2Config(hidden_size=32, num_attention_heads=4)
    rng = np.random.default_rng(0)
    p = {"qkv": {"kernel": rng.normal(0, .3, (32, 96)).astype(np.float32),
                 "bias": rng.normal(0, .1, 96).astype(np.float32)},
         "out": {"kernel": rng.normal(0, .3, (32, 32)).astype(np.float32),
                 "bias": np.zeros(32, np.float32)}}
    x = jnp.asarray(rng.normal(size=(3, 700, 32)).astype(np.float32))
    valid = jnp.arange(700)[None, :] < jnp.array([[700], [513], [9]])
    blocked = wav2vec2.self_attention(p, cfg, x, valid)           # 700 >= 2 x 256: blocked
    plain = wav2vec2.self_attention(p, cfg, x, valid, bias=jnp.zeros((1, 4, 700, 700)))
    assert max_diff(blocked, plain) < 1e-5


def test_masks_act_inside_the_forward_pass(speech):
    ours = to_flax(hf_encoder("mel80"), pad_to_30s=False)
    waves = batch_of(speech, (9000, 12000))
    base = ours.pooled(waves)
    keep = np.ones(ours.config.d_model, np.float32)
    keep[:5] = 0
    masked = ours.pooled(waves, masks={"layer_1": keep})
    names = ours.layer_names
    for k, name in enumerate(names):
        diff = max_diff(base[k], masked[k])
        if names.index(name) < names.index("layer_1"):
            assert diff == 0.0, name
        else:
            assert diff > 1e-3, name
    k = names.index("layer_1")
    assert not np.asarray(masked[k])[:, :5].any() and np.abs(np.asarray(base[k])[:, :5]).max() > 0
    # the other neurons of the masked layer are unchanged
    np.testing.assert_allclose(np.asarray(masked[k])[:, 5:], np.asarray(base[k])[:, 5:],
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['layer_99'\]"):
        ours.pooled(waves, masks={"layer_99": keep})


def test_init_random_and_bfloat16(speech):
    enc = hf_encoder("mel80")
    ours = to_flax(enc, pad_to_30s=False)
    rnd = ours.init_random(3)
    same = jax.tree.map(lambda a, b: a.shape == b.shape, ours.params, rnd.params)
    assert all(jax.tree.leaves(same))
    waves = batch_of(speech, (9000, 15000))
    f32 = ours.pooled(waves)
    assert max(max_diff(a, b) for a, b in zip(f32, rnd.pooled(waves))) > 0.1
    bf16 = to_flax(enc, pad_to_30s=False, dtype="bfloat16").pooled(waves)
    rel = [max_diff(a, b) / float(np.abs(np.asarray(a)).max()) for a, b in zip(f32, bf16)]
    print("bfloat16 vs float32, max relative error per layer:", np.round(rel, 4))
    assert max(rel) < 0.05 and min(rel) > 0          # really computed in bfloat16


# ------------------------------------------------------------------------------ converters

def openai_state(hf_state):
    """transformers WhisperEncoder names -> openai-whisper AudioEncoder names (model.py)."""
    names = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
             "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
             "self_attn_layer_norm": "attn_ln", "fc1": "mlp.0", "fc2": "mlp.2",
             "final_layer_norm": "mlp_ln"}
    out = {}
    for k, v in hf_state.items():
        if k == "embed_positions.weight":
            out["encoder.positional_embedding"] = v
        elif k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            mod, _, leaf = rest.rpartition(".")
            out[f"encoder.blocks.{i}.{names[mod]}.{leaf}"] = v
        else:
            mod, _, leaf = k.rpartition(".")
            out[f"encoder.{ {'layer_norm': 'ln_post'}.get(mod, mod)}.{leaf}"] = v
    out["decoder.token_embedding.weight"] = torch.zeros(4, 4)   # decoder keys are ignored
    return out


def test_converters_hf_directory_and_openai_pt_give_the_same_encoder(speech, tmp_path):
    """HF directory (WhisperForConditionalGeneration, safetensors) and an openai-whisper .pt
    made from the same weights: auto-detected, converted by the CLI, identical parameters."""
    torch.manual_seed(0)
    # openai-whisper's MLP is always 4 x d_model wide
    full = transformers.WhisperForConditionalGeneration(
        hf_config("mel80", encoder_ffn_dim=128)).eval()
    with torch.no_grad():
        for p in full.model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf_dir = tmp_path / "hf"
    full.save_pretrained(hf_dir)
    cfg = full.config
    dims = dict(n_mels=cfg.num_mel_bins, n_audio_ctx=cfg.max_source_positions,
                n_audio_state=cfg.d_model, n_audio_head=cfg.encoder_attention_heads,
                n_audio_layer=cfg.encoder_layers, n_vocab=cfg.vocab_size, n_text_ctx=16,
                n_text_state=cfg.d_model, n_text_head=2, n_text_layer=1)
    pt = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": openai_state(full.model.encoder.state_dict())},
               pt)
    assert detect_format(str(hf_dir)) == "huggingface_whisper"
    assert detect_format(str(pt)) == "openai_whisper"
    loaded = []
    for src in (hf_dir, pt):
        out = tmp_path / f"conv_{src.name}"
        subprocess.run([sys.executable, "-m", "experiments.convert", f"--source={src}",
                        f"--out={out}", "--option=pad_to_30s=false"], cwd=ROOT, check=True,
                       capture_output=True)
        loaded.append(encoders.load(str(out)))
    direct = to_flax(full.model.encoder, pad_to_30s=False)
    for enc in loaded:
        assert enc.family == "whisper" and not enc.config.pad_to_30s
        assert enc.source_sha256
        eq = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), enc.params, direct.params)
        assert all(jax.tree.leaves(eq))
    waves = batch_of(speech, (8000,))
    ref = hf_layers_native(full.model.encoder, waves[0])
    assert max_diff(loaded[1].pooled(waves)[-1][0], ref[-1].mean(0)) < TOL


def test_mismatched_checkpoint_lists_every_bad_key():
    enc = hf_encoder("mel80")
    state = state_numpy(enc)
    cfg = {k: getattr(enc.config, k) for k in VARIANTS["mel80"]}
    del state["layers.1.fc2.bias"]
    state["layers.0.self_attn.k_proj.bias"] = np.zeros(32, np.float32)
    state["conv2.weight"] = state["conv2.weight"][:, :, :2]
    with pytest.raises(CheckpointMismatchError) as err:
        whisper_encoder_from_state(cfg, state, source="my_whisper.bin", source_sha256=None)
    msg = str(err.value)
    for part in ("my_whisper.bin", "missing (1): layers.1.fc2.bias",
                 "unexpected (1): layers.0.self_attn.k_proj.bias", "conv2.weight: file (32, 32, 2)"):
        assert part in msg
    with pytest.raises(ConvertOptionError, match="unknown option.*chunk.*huggingface_whisper"):
        convert(ROOT, format="huggingface_whisper", chunk=3)
