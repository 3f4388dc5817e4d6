"""Convert Hugging Face wav2vec2 / HuBERT / data2vec-audio / WavLM directories (no torch needed).

Reads ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin`` (sharded ones too) through
:func:`speechinterp.convert.state_dict.read_hf_directory`. Key names are those of transformers'
``Wav2Vec2Model`` / ``HubertModel`` / ``Data2VecAudioModel`` / ``WavLMModel``; checkpoints of the
task models (``*ForCTC``, ``*ForPreTraining``, ``*ForSequenceClassification``, ...) are accepted
too: their base-model keys carry a ``wav2vec2.`` / ``hubert.`` / ``data2vec_audio.`` / ``wavlm.``
prefix, which is stripped, and every head key outside it is ignored.

The weight-norm positional conv is read in any of its three namings
(``conv.parametrizations.weight.original0/1``, transformers >= 4.3x; ``conv.weight_g/weight_v``,
older saves; a plain ``conv.weight``) and folded into a plain kernel ``g * v / ||v||`` (norm over
all axes but the kernel axis, torch ``weight_norm(dim=2)``).

Waveform normalisation (``Encoder.normalize_waveform``): the ``do_normalize`` of the directory's
``preprocessor_config.json`` when present; otherwise the ``normalize`` option; otherwise true
exactly for layer-norm feature encoders (fairseq's convention: the large-lv60 / XLS-R models
were trained on normalised audio, the group-norm base models on raw audio).
"""
from __future__ import annotations

import json
import os

import numpy as np

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format
from speechinterp.convert.keys import check_state_dict
from speechinterp.convert.state_dict import is_hf_directory, read_hf_directory
from speechinterp.encoders.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder
from speechinterp.encoders.wavlm import WavLMEncoder

MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")
BASE_PREFIXES = ("wav2vec2.", "hubert.", "data2vec_audio.", "wavlm.")
# keys of the base models that the encoder does not use (SpecAugment's mask vector)
IGNORED = ("masked_spec_embed",)


def config_from_hf(d: dict) -> Wav2Vec2Config:
    """Our config from a HF ``config.json`` dict (HF's defaults for absent fields)."""
    mt = d.get("model_type", "wav2vec2")
    if mt not in MODEL_TYPES:
        raise ValueError(f"model_type {mt!r} is not one of {MODEL_TYPES}")
    if d.get("add_adapter"):
        raise ValueError("add_adapter=True (a strided adapter after the encoder) is not supported")
    if d.get("adapter_attn_dim") is not None:
        raise ValueError("adapter_attn_dim (MMS attention adapters) is not supported")
    g = lambda k, default: d.get(k, default)
    common = dict(
        model_type=mt,
        conv_dim=tuple(g("conv_dim", (512,) * 7)),
        conv_kernel=tuple(g("conv_kernel", (10, 3, 3, 3, 3, 2, 2))),
        conv_stride=tuple(g("conv_stride", (5, 2, 2, 2, 2, 2, 2))),
        conv_bias=bool(g("conv_bias", False)),
        feat_extract_activation=g("feat_extract_activation", "gelu"),
        hidden_size=int(g("hidden_size", 768)),
        num_hidden_layers=int(g("num_hidden_layers", 12)),
        num_attention_heads=int(g("num_attention_heads", 12)),
        intermediate_size=int(g("intermediate_size", 3072)),
        hidden_act=g("hidden_act", "gelu"),
        layer_norm_eps=float(g("layer_norm_eps", 1e-5)),
        pos_conv_groups=int(g("num_conv_pos_embedding_groups", 16)),
    )
    if mt == "data2vec-audio":
        return Wav2Vec2Config(**common, feat_extract_norm="layer", do_stable_layer_norm=False,
                              pos_conv_kernel=int(g("conv_pos_kernel_size", 19)),
                              pos_conv_depth=int(g("num_conv_pos_embeddings", 5)))
    extra = {}
    if mt == "hubert":
        extra = dict(feat_proj_layer_norm=bool(g("feat_proj_layer_norm", True)),
                     pos_conv_batch_norm=bool(g("conv_pos_batch_norm", False)))
    if mt == "wavlm":
        extra = dict(num_buckets=int(g("num_buckets", 320)),
                     max_bucket_distance=int(g("max_bucket_distance", 800)))
    return Wav2Vec2Config(**common, **extra, feat_extract_norm=g("feat_extract_norm", "group"),
                          do_stable_layer_norm=bool(g("do_stable_layer_norm", False)),
                          pos_conv_kernel=int(g("num_conv_pos_embeddings", 128)))


def base_model_state(state: dict) -> dict:
    """Strip a task model's base-model prefix (dropping its heads); other dicts pass unchanged."""
    for prefix in BASE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def pos_conv_naming(state: dict) -> str:
    """How the single positional conv's weight is stored: parametrizations / legacy / plain."""
    base = "encoder.pos_conv_embed.conv."
    if base + "parametrizations.weight.original0" in state:
        return "parametrizations"
    if base + "weight_g" in state:
        return "legacy"
    return "plain"


def expected_shapes(cfg: Wav2Vec2Config, naming: str = "parametrizations") -> dict:
    """HF base-model key -> shape for ``cfg``."""
    s = {}
    cin = 1
    for i, (c, k) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
        pre = f"feature_extractor.conv_layers.{i}."
        s[pre + "conv.weight"] = (c, cin, k)
        if cfg.conv_bias:
            s[pre + "conv.bias"] = (c,)
        if cfg.feat_extract_norm == "layer" or i == 0:
            s[pre + "layer_norm.weight"] = (c,)
            s[pre + "layer_norm.bias"] = (c,)
        cin = c
    d, c, f = cfg.hidden_size, cfg.conv_dim[-1], cfg.intermediate_size
    if cfg.feat_proj_layer_norm:
        s["feature_projection.layer_norm.weight"] = (c,)
        s["feature_projection.layer_norm.bias"] = (c,)
    s["feature_projection.projection.weight"] = (d, c)
    s["feature_projection.projection.bias"] = (d,)
    kshape = (d, d // cfg.pos_conv_groups, cfg.pos_conv_kernel)
    pc = "encoder.pos_conv_embed."
    if cfg.pos_conv_depth > 1:
        for i in range(cfg.pos_conv_depth):
            s[pc + f"layers.{i}.conv.weight"] = kshape
            s[pc + f"layers.{i}.conv.bias"] = (d,)
    else:
        s[pc + "conv.bias"] = (d,)
        if cfg.pos_conv_batch_norm:
            s[pc + "conv.weight"] = kshape
            for n in ("weight", "bias", "running_mean", "running_var"):
                s[pc + f"batch_norm.{n}"] = (d,)
            s[pc + "batch_norm.num_batches_tracked"] = ()
        elif naming == "parametrizations":
            s[pc + "conv.parametrizations.weight.original0"] = (1, 1, cfg.pos_conv_kernel)
            s[pc + "conv.parametrizations.weight.original1"] = kshape
        elif naming == "legacy":
            s[pc + "conv.weight_g"] = (1, 1, cfg.pos_conv_kernel)
            s[pc + "conv.weight_v"] = kshape
        else:
            s[pc + "conv.weight"] = kshape
    s["encoder.layer_norm.weight"] = (d,)
    s["encoder.layer_norm.bias"] = (d,)
    for i in range(cfg.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[pre + f"attention.{n}.weight"] = (d, d)
            s[pre + f"attention.{n}.bias"] = (d,)
        for n in ("layer_norm", "final_layer_norm"):
            s[pre + f"{n}.weight"] = (d,)
            s[pre + f"{n}.bias"] = (d,)
        s[pre + "feed_forward.intermediate_dense.weight"] = (f, d)
        s[pre + "feed_forward.intermediate_dense.bias"] = (f,)
        s[pre + "feed_forward.output_dense.weight"] = (d, f)
        s[pre + "feed_forward.output_dense.bias"] = (d,)
        if cfg.model_type == "wavlm":
            s[pre + "attention.gru_rel_pos_const"] = (1, cfg.num_attention_heads, 1, 1)
            s[pre + "attention.gru_rel_pos_linear.weight"] = (8, cfg.head_dim)
            s[pre + "attention.gru_rel_pos_linear.bias"] = (8,)
            if i == 0:
                s[pre + "attention.rel_attn_embed.weight"] = (cfg.num_buckets,
                                                               cfg.num_attention_heads)
    return s


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch ``weight_norm(dim=2)``: ``w[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||``."""
    g = np.asarray(g, np.float64)
    v = np.asarray(v, np.float64)
    norm = np.sqrt(np.sum(v * v, axis=(0, 1), keepdims=True))
    return (g * v / norm).astype(np.float32)


def params_from_hf_state(state: dict, cfg: Wav2Vec2Config, source: str = "checkpoint",
                         consume: bool = False) -> dict:
    """Our parameter tree from a HF base-model state dict (checked key by key, shape by shape).

    ``consume=True`` empties ``state`` while converting, so that the file's arrays are freed as
    soon as their converted copies exist (peak memory: one model, not two).
    """
    state = base_model_state(state if consume else dict(state))
    naming = pos_conv_naming(state)
    check_state_dict(state, expected_shapes(cfg, naming), source, ignore=IGNORED)
    f32 = lambda k: np.array(state.pop(k), np.float32)
    lin = lambda k: {"kernel": np.ascontiguousarray(f32(k + ".weight").T), "bias": f32(k + ".bias")}
    ln = lambda k: {"scale": f32(k + ".weight"), "bias": f32(k + ".bias")}
    conv_k = lambda w: np.ascontiguousarray(np.transpose(np.asarray(w, np.float32), (2, 1, 0)))
    pop = state.pop

    params = {"conv_layers": {}}
    for i in range(len(cfg.conv_dim)):
        pre = f"feature_extractor.conv_layers.{i}."
        p = {"kernel": conv_k(pop(pre + "conv.weight"))}
        if cfg.conv_bias:
            p["bias"] = f32(pre + "conv.bias")
        if cfg.feat_extract_norm == "layer" or i == 0:
            p["norm"] = ln(pre + "layer_norm")
        params["conv_layers"][f"conv_{i}"] = p
    fp = {"projection": lin("feature_projection.projection")}
    if cfg.feat_proj_layer_norm:
        fp["layer_norm"] = ln("feature_projection.layer_norm")
    params["feature_projection"] = fp

    pc = "encoder.pos_conv_embed."
    if cfg.pos_conv_depth > 1:
        pos = {f"conv_{i}": {"kernel": conv_k(pop(pc + f"layers.{i}.conv.weight")),
                             "bias": f32(pc + f"layers.{i}.conv.bias")}
               for i in range(cfg.pos_conv_depth)}
    else:
        if naming == "parametrizations":
            w = fold_weight_norm(pop(pc + "conv.parametrizations.weight.original0"),
                                 pop(pc + "conv.parametrizations.weight.original1"))
        elif naming == "legacy":
            w = fold_weight_norm(pop(pc + "conv.weight_g"), pop(pc + "conv.weight_v"))
        else:
            w = pop(pc + "conv.weight")
        pos = {"conv_0": {"kernel": conv_k(w), "bias": f32(pc + "conv.bias")}}
        if cfg.pos_conv_batch_norm:
            bn = pc + "batch_norm."
            pos["batch_norm"] = {"scale": f32(bn + "weight"), "bias": f32(bn + "bias"),
                                 "mean": f32(bn + "running_mean"), "var": f32(bn + "running_var")}
    params["pos_conv"] = pos
    params["encoder_norm"] = ln("encoder.layer_norm")

    layers = {}
    for i in range(cfg.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        a = pre + "attention."
        q, k, v = (lin(a + n) for n in ("q_proj", "k_proj", "v_proj"))
        p = {"qkv": {"kernel": np.concatenate([q["kernel"], k["kernel"], v["kernel"]], 1),
                     "bias": np.concatenate([q["bias"], k["bias"], v["bias"]])},
             "out": lin(a + "out_proj"),
             "attn_norm": ln(pre + "layer_norm"), "final_norm": ln(pre + "final_layer_norm"),
             "ffn_in": lin(pre + "feed_forward.intermediate_dense"),
             "ffn_out": lin(pre + "feed_forward.output_dense")}
        if cfg.model_type == "wavlm":
            p["gru_rel_pos_const"] = f32(a + "gru_rel_pos_const").reshape(-1)
            p["gru_rel_pos_linear"] = lin(a + "gru_rel_pos_linear")
            if i == 0:
                p["rel_attn_embed"] = f32(a + "rel_attn_embed.weight")
        layers[f"layer_{i}"] = p
    params["layers"] = layers
    return params


def make_encoder(cfg: Wav2Vec2Config, params, normalize: bool, sha: str | None):
    cls = WavLMEncoder if cfg.model_type == "wavlm" else Wav2Vec2Encoder
    return cls(config=cfg, params=params, family="wavlm" if cfg.model_type == "wavlm"
               else "wav2vec2", sample_rate=16000, normalize_waveform=bool(normalize),
               source_sha256=sha)


def _parse_bool(v) -> bool:
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes"):
            return True
        if v.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"not a boolean: {v!r}")
    return bool(v)


def read_normalize(directory: str, cfg: Wav2Vec2Config, option=None) -> bool:
    """``do_normalize`` of preprocessor_config.json, else ``option``, else the fairseq rule."""
    pre = os.path.join(directory, "preprocessor_config.json")
    if os.path.exists(pre):
        with open(pre) as f:
            fe = json.load(f)
        if "do_normalize" in fe:
            return bool(fe["do_normalize"])
    if option is not None:
        return _parse_bool(option)
    return cfg.feat_extract_norm == "layer"


def detect(path: str) -> bool:
    return is_hf_directory(path, MODEL_TYPES)


@register_format("huggingface_wav2vec2", detect,
                 "Hugging Face wav2vec2 / hubert / data2vec-audio / wavlm directory "
                 "(config.json + safetensors or bin, sharded too)")
def convert(path: str, normalize=None, dtype: str = "float32", **options):
    """Encoder from a HF directory; ``normalize`` only applies without a preprocessor config."""
    if options:
        raise TypeError(f"unknown huggingface_wav2vec2 options: {sorted(options)}")
    hf_cfg, state = read_hf_directory(path)
    cfg = config_from_hf(hf_cfg)
    cfg.dtype = dtype
    cfg.__post_init__()
    params = params_from_hf_state(state, cfg, source=path, consume=True)
    return make_encoder(cfg, params, read_normalize(path, cfg, normalize), sha256_of(path))
