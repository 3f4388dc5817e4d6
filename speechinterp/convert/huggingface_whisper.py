"""Convert Hugging Face Whisper directories to the ``whisper`` encoder (no torch needed).

Reads ``config.json`` + ``model.safetensors`` / ``pytorch_model.bin`` (sharded too). Keys are
those of transformers' ``WhisperEncoder`` under the ``model.encoder.`` (``WhisperForConditional
Generation``, ``WhisperForAudioClassification``'s ``encoder.``) or ``encoder.`` (``WhisperModel``)
prefix; decoder and head keys are ignored. :func:`whisper_encoder_from_state` is the common last
step of every Whisper converter (openai-whisper ``.pt``, CTranslate2): a state dict with HF names
relative to ``WhisperEncoder`` -> checked, renamed, the q/k/v projections fused (the key
projection has no bias: a zero bias is exact) -> :class:`WhisperEncoder`.

Options: ``pad_to_30s`` (default true: the reference 30 s window; false: native length, see
:mod:`speechinterp.encoders.whisper`) and ``dtype`` (``float32`` or ``bfloat16`` compute).
"""
from __future__ import annotations

import numpy as np

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format
from speechinterp.convert.huggingface_wav2vec2 import _parse_bool
from speechinterp.convert.keys import check_state_dict
from speechinterp.convert.state_dict import is_hf_directory, read_hf_directory
from speechinterp.encoders.whisper import WhisperConfig, WhisperEncoder

CONFIG_KEYS = ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
               "encoder_ffn_dim", "max_source_positions", "activation_function")
ENCODER_PREFIXES = ("model.encoder.", "encoder.")


def expected_shapes(cfg: WhisperConfig) -> dict[str, tuple]:
    """HF ``WhisperEncoder`` state-dict names -> shapes (torch layouts)."""
    d, f, m = cfg.d_model, cfg.encoder_ffn_dim, cfg.num_mel_bins
    shapes = {"conv1.weight": (d, m, 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3),
              "conv2.bias": (d,), "embed_positions.weight": (cfg.max_source_positions, d),
              "layer_norm.weight": (d,), "layer_norm.bias": (d,)}
    for i in range(cfg.encoder_layers):
        p = f"layers.{i}."
        for proj in ("q_proj", "v_proj", "out_proj"):
            shapes[f"{p}self_attn.{proj}.weight"] = (d, d)
            shapes[f"{p}self_attn.{proj}.bias"] = (d,)
        shapes[f"{p}self_attn.k_proj.weight"] = (d, d)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{p}{ln}.weight"] = (d,)
            shapes[f"{p}{ln}.bias"] = (d,)
        shapes.update({f"{p}fc1.weight": (f, d), f"{p}fc1.bias": (f,),
                       f"{p}fc2.weight": (d, f), f"{p}fc2.bias": (d,)})
    return shapes


def params_from_state(state: dict, cfg: WhisperConfig) -> dict:
    """HF-named encoder state (torch layouts) -> the Flax parameter tree of ``whisper.py``."""
    f32 = lambda k: np.asarray(state[k], np.float32)
    conv = lambda name: {"kernel": np.ascontiguousarray(f32(f"{name}.weight").transpose(2, 1, 0)),
                         "bias": f32(f"{name}.bias")}
    lin = lambda name: {"kernel": np.ascontiguousarray(f32(f"{name}.weight").T),
                        "bias": f32(f"{name}.bias")}
    norm = lambda name: {"scale": f32(f"{name}.weight"), "bias": f32(f"{name}.bias")}
    layers = {}
    for i in range(cfg.encoder_layers):
        p = f"layers.{i}."
        a = p + "self_attn."
        qkv_w = np.concatenate([f32(f"{a}{x}_proj.weight") for x in "qkv"], axis=0)
        qkv_b = np.concatenate([f32(a + "q_proj.bias"), np.zeros(cfg.d_model, np.float32),
                                f32(a + "v_proj.bias")])
        layers[f"layer_{i}"] = {
            "qkv": {"kernel": np.ascontiguousarray(qkv_w.T), "bias": qkv_b},
            "out": lin(a + "out_proj"), "attn_norm": norm(p + "self_attn_layer_norm"),
            "final_norm": norm(p + "final_layer_norm"), "ffn_in": lin(p + "fc1"),
            "ffn_out": lin(p + "fc2")}
    return {"conv1": conv("conv1"), "conv2": conv("conv2"),
            "embed_positions": f32("embed_positions.weight"), "layers": layers,
            "layer_norm": norm("layer_norm")}


def config_from_hf(d: dict, pad_to_30s=True, dtype: str = "float32") -> WhisperConfig:
    missing = [k for k in CONFIG_KEYS if k not in d and k != "activation_function"]
    if missing:
        raise ValueError(f"Whisper config lacks {missing}")
    return WhisperConfig(**{k: d[k] for k in CONFIG_KEYS if k in d},
                         pad_to_30s=_parse_bool(pad_to_30s), dtype=dtype)


def whisper_encoder_from_state(config: dict, state: dict, *, source: str,
                               source_sha256: str | None, pad_to_30s=True,
                               dtype: str = "float32") -> WhisperEncoder:
    """A :class:`WhisperEncoder` from an HF-style config dict and an encoder state dict with HF
    names relative to ``WhisperEncoder``; mismatches raise an error listing every bad key."""
    cfg = config_from_hf(config, pad_to_30s, dtype)
    check_state_dict(state, expected_shapes(cfg), source)
    return WhisperEncoder(config=cfg, params=params_from_state(state, cfg), family="whisper",
                          sample_rate=16000, normalize_waveform=False,
                          source_sha256=source_sha256)


def encoder_state(state: dict) -> dict:
    """The encoder's keys of a whole-model state dict, prefix stripped (decoder/heads dropped)."""
    for prefix in ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)                       # a bare WhisperEncoder state dict


def detect(path: str) -> bool:
    return is_hf_directory(path, ("whisper",))


@register_format("huggingface_whisper", detect,
                 "Hugging Face Whisper directory (config.json + safetensors or bin; encoder only)")
def convert(path: str, pad_to_30s=True, dtype: str = "float32", **options):
    if options:
        raise TypeError(f"unknown huggingface_whisper options: {sorted(options)}")
    hf_cfg, state = read_hf_directory(path)
    return whisper_encoder_from_state(hf_cfg, encoder_state(state), source=path,
                                      source_sha256=sha256_of(path), pad_to_30s=pad_to_30s,
                                      dtype=dtype)
