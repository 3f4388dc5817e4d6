"""Convert Resemblyzer's ``pretrained.pt`` (GE2E VoiceEncoder) to the ``ge2e`` family.

The file (resemblyzer 0.1.4 wheel, ``resemblyzer/pretrained.pt``) is a torch zip pickle holding
``{"step", "model_state", "optimizer_state"}``; ``model_state`` has ``lstm.weight_ih_l{0,1,2}``,
``lstm.weight_hh_l*``, ``lstm.bias_{ih,hh}_l*``, ``linear.{weight,bias}`` and the GE2E loss's
``similarity_weight`` / ``similarity_bias`` (ignored, as ``VoiceEncoder`` loads with
``strict=False``). Read without torch (:mod:`speechinterp.convert.torch_pickle`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format
from speechinterp.convert import torch_pickle
from speechinterp.convert.keys import check_state_dict
from speechinterp.convert.wheels import fetch_wheel_file
from speechinterp.encoders.ge2e import GE2EConfig, GE2EEncoder

PACKAGE, VERSION, MEMBER = "resemblyzer", "0.1.4", "resemblyzer/pretrained.pt"
IGNORED = ("similarity_weight", "similarity_bias")


def fetch_pretrained(cache_dir: str) -> str:
    """Path of ``pretrained.pt`` extracted from the resemblyzer 0.1.4 wheel."""
    return fetch_wheel_file(PACKAGE, VERSION, MEMBER, cache_dir)


def expected_shapes(cfg: GE2EConfig) -> dict:
    h4 = 4 * cfg.hidden_size
    shapes = {}
    for i in range(cfg.num_layers):
        d_in = cfg.n_mels if i == 0 else cfg.hidden_size
        shapes[f"lstm.weight_ih_l{i}"] = (h4, d_in)
        shapes[f"lstm.weight_hh_l{i}"] = (h4, cfg.hidden_size)
        shapes[f"lstm.bias_ih_l{i}"] = (h4,)
        shapes[f"lstm.bias_hh_l{i}"] = (h4,)
    shapes["linear.weight"] = (cfg.embedding_size, cfg.hidden_size)
    shapes["linear.bias"] = (cfg.embedding_size,)
    return shapes


def _state(obj):
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    if not isinstance(obj, dict):
        raise ValueError("not a state dict")
    return {k: np.asarray(v) for k, v in obj.items() if hasattr(v, "shape")}


def detect(path: str) -> bool:
    state = _state(torch_pickle.load(path))
    return "lstm.weight_ih_l0" in state and "linear.weight" in state


def params_from_state(state, cfg: GE2EConfig, source: str = "checkpoint"):
    """Flax parameter tree from a ``VoiceEncoder`` state dict (keys checked first)."""
    check_state_dict(state, expected_shapes(cfg), source, ignore=IGNORED)
    f32 = lambda k: np.asarray(state[k], np.float32)
    params = {}
    for i in range(cfg.num_layers):
        params[f"lstm_l{i}"] = {
            "w_ih": np.ascontiguousarray(f32(f"lstm.weight_ih_l{i}").T),
            "w_hh": np.ascontiguousarray(f32(f"lstm.weight_hh_l{i}").T),
            "bias": f32(f"lstm.bias_ih_l{i}") + f32(f"lstm.bias_hh_l{i}"),
        }
    params["linear"] = {"kernel": np.ascontiguousarray(f32("linear.weight").T),
                        "bias": f32("linear.bias")}
    return params


@register_format("resemblyzer_ge2e", detect,
                 "Resemblyzer GE2E VoiceEncoder pretrained.pt (torch pickle, model_state)",
                 options=lambda: [f.name for f in dataclasses.fields(GE2EConfig)])
def convert(path: str, **options) -> GE2EEncoder:
    cfg = GE2EConfig(**{k: type(getattr(GE2EConfig(), k))(v) for k, v in options.items()})
    state = _state(torch_pickle.load(path))
    params = params_from_state(state, cfg, source=path)
    return GE2EEncoder(config=cfg, params=params, family="ge2e", sample_rate=cfg.sample_rate,
                       normalize_waveform=False, source_sha256=sha256_of(path))
