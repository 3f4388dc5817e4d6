"""Convert openai-whisper checkpoints (``tiny.pt`` ... ``large-v3.pt``) without torch.

The file is ``torch.save({"dims": ModelDimensions as dict, "model_state_dict": ...})``
(openai-whisper ``whisper/__init__.py: load_model``); the encoder is ``whisper/model.py:
AudioEncoder``: ``conv1``, ``conv2``, the ``positional_embedding`` buffer, ``blocks.{i}`` with
``attn.{query,key,value,out}`` (``key`` without bias), ``attn_ln``, ``mlp.0`` / ``mlp.2`` and
``mlp_ln``, and ``ln_post``. Names are mapped to transformers' ``WhisperEncoder`` ones and the
rest is :func:`~speechinterp.convert.huggingface_whisper.whisper_encoder_from_state`.
"""
from __future__ import annotations

import os
import re

import numpy as np

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format, torch_pickle
from speechinterp.convert.huggingface_whisper import whisper_encoder_from_state

_BLOCK = re.compile(r"^encoder\.blocks\.(\d+)\.(.+)$")
_BLOCK_NAMES = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
                "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
                "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
                "mlp_ln": "final_layer_norm"}
_TOP_NAMES = {"encoder.conv1": "conv1", "encoder.conv2": "conv2", "encoder.ln_post": "layer_norm"}
DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


def config_from_dims(dims: dict) -> dict:
    """openai ``ModelDimensions`` -> HF ``WhisperConfig``-style encoder dict."""
    return {"num_mel_bins": int(dims["n_mels"]), "d_model": int(dims["n_audio_state"]),
            "encoder_layers": int(dims["n_audio_layer"]),
            "encoder_attention_heads": int(dims["n_audio_head"]),
            "encoder_ffn_dim": 4 * int(dims["n_audio_state"]),
            "max_source_positions": int(dims["n_audio_ctx"]), "activation_function": "gelu"}


def to_hf_names(state: dict) -> dict:
    """openai encoder keys -> HF ``WhisperEncoder`` keys; unknown encoder keys keep their name
    (so the mismatch check lists them); decoder keys are dropped."""
    out = {}
    for key, value in state.items():
        if not key.startswith("encoder."):
            continue
        if key == "encoder.positional_embedding":
            out["embed_positions.weight"] = value
            continue
        m = _BLOCK.match(key)
        if m:
            mod, _, leaf = m.group(2).rpartition(".")
            out[f"layers.{m.group(1)}.{_BLOCK_NAMES.get(mod, mod)}.{leaf}"] = value
            continue
        mod, _, leaf = key.rpartition(".")
        out[f"{_TOP_NAMES.get(mod, mod)}.{leaf}"] = value
    return out


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """``(dims, model_state_dict)`` of an openai-whisper ``.pt``."""
    obj = torch_pickle.load(path)
    if not (isinstance(obj, dict) and isinstance(obj.get("dims"), dict)
            and isinstance(obj.get("model_state_dict"), dict)):
        raise ValueError(f"{path}: not an openai-whisper checkpoint "
                         "(expected a dict with 'dims' and 'model_state_dict')")
    missing = [k for k in DIMS if k not in obj["dims"]]
    if missing:
        raise ValueError(f"{path}: openai-whisper 'dims' lacks {missing}")
    state = {k: np.asarray(v) for k, v in obj["model_state_dict"].items() if hasattr(v, "shape")}
    return obj["dims"], state


def detect(path: str) -> bool:
    if not (os.path.isfile(path) and path.endswith((".pt", ".pth"))):
        return False
    blob = torch_pickle.pickle_bytes(path)
    return b"model_state_dict" in blob and b"n_audio_state" in blob


@register_format("openai_whisper", detect, "openai-whisper checkpoint (.pt with dims + "
                 "model_state_dict; encoder only)")
def convert(path: str, pad_to_30s=True, dtype: str = "float32", **options):
    if options:
        raise TypeError(f"unknown openai_whisper options: {sorted(options)}")
    dims, state = read_checkpoint(path)
    return whisper_encoder_from_state(config_from_dims(dims), to_hf_names(state), source=path,
                                      source_sha256=sha256_of(path), pad_to_30s=pad_to_30s,
                                      dtype=dtype)
