"""WavLM encoder in JAX: a port of transformers 5.24's PyTorch ``WavLMModel``
(``transformers/models/wavlm/modeling_wavlm.py``, after microsoft/unilm ``WavLM.py``).

Everything but the attention is the wav2vec 2.0 architecture (``wav2vec2.py``: feature encoder,
projection, weight-norm positional conv, post-LN or stable-LN layers), with the same layer names
(``["cnn", "layer_0", ..., "layer_L"]``, ``layer_k`` = HF ``hidden_states[k]``), the same padding
behaviour and the same ``dtype`` option.

Gated relative position bias (``WavLMAttention``):

* only layer 0 owns the bucket embedding ``rel_attn_embed`` [num_buckets, H]; it computes the
  bias ``B[h, i, j] = E[bucket(j - i), h]`` once (T5-style log buckets: half the buckets per
  direction, exact below ``num_buckets // 4``, logarithmic up to ``max_bucket_distance``), and every
  later layer receives that same, ungated bias;
* each layer gates it per query frame and head from its own attention input ``x``:
  ``(a, b) = sigmoid(sum over 4 of reshape(Linear_8(x_h), [2, 4]))``,
  ``gate = a * (b * c_h - 1) + 2`` with the learned per-head constant ``c_h``
  (``gru_rel_pos_const``), and adds ``gate[b, h, i] * B[h, i, j]`` to the attention logits.

The bucket indices depend only on the (static) frame count, so they are computed with numpy at
trace time, in float32 like torch's ``_relative_positions_bucket``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.encoders.base import apply_layer_mask, register
from speechinterp.encoders.wav2vec2 import (Wav2Vec2Config, _normal, _Wav2Vec2Base, compute_dtype,
                                            dense, encoder_input, init_common, numpy_rng,
                                            self_attention, transformer_layer)


def relative_position_buckets(t: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """[t, t] int32 bucket of ``j - i`` (WavLM ``_relative_positions_bucket``, float32 maths)."""
    rel = np.arange(t, dtype=np.int64)[None, :] - np.arange(t, dtype=np.int64)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    is_small = rel < max_exact
    with np.errstate(divide="ignore"):
        large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact))
    large = large * np.float32(half - max_exact)
    large = np.where(is_small, 0, (np.float32(max_exact) + large)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(is_small, rel, large)).astype(np.int32)


def position_bias(embed, cfg, t: int):
    """Ungated bias [H, T, T] from layer 0's bucket embedding [num_buckets, H]."""
    idx = relative_position_buckets(t, cfg.num_buckets, cfg.max_bucket_distance)
    return jnp.transpose(embed[idx], (2, 0, 1)).astype(jnp.float32)


def gated_bias(p, cfg, x, bias):
    """Per query frame and head gate times the bias: [B, H, T, T]."""
    b, t, _ = x.shape
    h, hd = cfg.num_attention_heads, cfg.head_dim
    g = dense(x.reshape(b, t, h, hd), p["gru_rel_pos_linear"], jnp.float32)   # [B, T, H, 8]
    g = jax.nn.sigmoid(g.reshape(b, t, h, 2, 4).sum(-1))
    gate = g[..., 0] * (g[..., 1] * p["gru_rel_pos_const"] - 1.0) + 2.0        # [B, T, H]
    return jnp.transpose(gate, (0, 2, 1))[..., None] * bias[None]


def forward(params, cfg, waveforms, lengths, masks=None):
    """All probed layers: ([cnn, layer_0, ..., layer_L], [valid frames] * (L + 2))."""
    feats, h, n, valid = encoder_input(params, cfg, waveforms, lengths, masks)
    outs = [feats, h]
    bias = position_bias(params["layers"]["layer_0"]["rel_attn_embed"], cfg, h.shape[1])

    def attend(p, y):
        return self_attention(p, cfg, y, valid, bias=gated_bias(p, cfg, y, bias))

    for i in range(cfg.num_hidden_layers):
        h = transformer_layer(params["layers"][f"layer_{i}"], cfg, h, valid, attend)
        h = apply_layer_mask(h, masks, f"layer_{i + 1}")
        outs.append(h)
    return outs, [n] * len(outs)


@register("wavlm", architecture="transformer")
class WavLMEncoder(_Wav2Vec2Base):
    """WavLM (``config.model_type == "wavlm"``)."""

    config_cls = Wav2Vec2Config

    def apply(self, params, waveforms, lengths, masks=None):
        return forward(params, self.config, waveforms, lengths, masks)

    def init_params(self, rng):
        cfg = self.config
        k0, k1 = jax.random.split(rng)
        params = init_common(k0, cfg)
        gen = numpy_rng(k1)
        for i in range(cfg.num_hidden_layers):
            p = params["layers"][f"layer_{i}"]
            p["gru_rel_pos_const"] = np.ones(cfg.num_attention_heads, np.float32)
            p["gru_rel_pos_linear"] = {"kernel": _normal(gen, (cfg.head_dim, 8), 0.02),
                                       "bias": np.zeros(8, np.float32)}
        params["layers"]["layer_0"]["rel_attn_embed"] = _normal(
            gen, (cfg.num_buckets, cfg.num_attention_heads), 0.02)
        return params


__all__ = ["WavLMEncoder", "Wav2Vec2Config", "forward", "relative_position_buckets",
           "compute_dtype"]
