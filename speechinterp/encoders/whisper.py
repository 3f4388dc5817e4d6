"""Whisper's audio encoder in JAX: a port of transformers 5.x ``WhisperEncoder``.

Same computation as ``transformers/models/whisper/modeling_whisper.py`` (and openai-whisper's
``AudioEncoder``): the log-mel front end (:mod:`whisper_frontend`), two 1-D convolutions
(kernel 3, padding 1; the second of stride 2) each followed by exact GELU (whatever the
config's ``activation_function``, which only acts in the feed-forward blocks), the learned/sinusoidal
position table added, pre-LN Transformer blocks (the key projection has no bias), and a final
LayerNorm.

Probed layers (``layer_names``): ``["cnn", "layer_0", ..., "layer_L"]``: ``cnn`` is the second
convolution's GELU output (before the positions); ``layer_k`` is HF's ``output_hidden_states``
entry ``k``: ``layer_0`` the block input (convolutions + positions), ``layer_k`` block ``k``'s
output, and ``layer_L`` the last block's output *after* the final LayerNorm, as transformers
returns it. A mask for a layer acts on its output inside the forward pass.

Length (``WhisperConfig.pad_to_30s``):

* ``True`` (default, the reference): every utterance is zero-padded to the model's window
  (``2 * max_source_positions`` feature frames: 30 s for the released models) and the encoder
  runs on all ``max_source_positions`` frames with full attention, exactly as transformers and
  CTranslate2 do. Utterances longer than the window are truncated.
* ``False``: each utterance runs at its own length, up to the window: the features are those of
  that utterance alone, padded frames are zeroed before each convolution and masked out of every
  attention, and positions ``0..T-1`` are used. Much faster for short utterances (10 s costs a
  third of 30 s); the representations differ from the padded reference because Whisper was
  trained on 30 s windows (the encoder attends to the silence that follows the speech).

Either way the valid frames of an utterance of ``n`` samples are ``ceil((n // 160) / 2)``, and
each utterance of a padded batch gives the same values as when run alone.
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from speechinterp.encoders import whisper_frontend as frontend
from speechinterp.encoders.base import Encoder, apply_layer_mask, frame_mask, register
from speechinterp.encoders.wav2vec2 import (ACTIVATIONS, compute_dtype, conv1d, layer_norm,
                                            numpy_rng, transformer_layer)


@dataclasses.dataclass
class WhisperConfig:
    """Encoder architecture (field names follow HF ``WhisperConfig``) plus the length mode."""

    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    activation_function: str = "gelu"
    pad_to_30s: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        if self.d_model % self.encoder_attention_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of "
                             f"encoder_attention_heads {self.encoder_attention_heads}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"unsupported activation_function {self.activation_function!r}; "
                             f"known: {sorted(ACTIVATIONS)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {self.dtype!r}")
        self.pad_to_30s = bool(self.pad_to_30s)

    # names the shared Transformer pieces of wav2vec2.py read
    num_attention_heads = property(lambda self: self.encoder_attention_heads)
    hidden_size = property(lambda self: self.d_model)
    head_dim = property(lambda self: self.d_model // self.encoder_attention_heads)
    hidden_act = property(lambda self: self.activation_function)
    layer_norm_eps = 1e-5
    do_stable_layer_norm = True

    @property
    def chunk_samples(self) -> int:
        """The model's input window in samples (480,000 = 30 s for the released models)."""
        return 2 * self.max_source_positions * frontend.HOP_LENGTH


def encoder_frames(mel_frames):
    """Frames after the stride-2 convolution (kernel 3, padding 1)."""
    return (mel_frames + 1) // 2


def forward(params, cfg: WhisperConfig, waveforms, lengths, masks=None):
    """All probed layers: ([cnn, layer_0, ..., layer_L], [valid frames] * (L + 2))."""
    cd = compute_dtype(cfg)
    act = ACTIVATIONS["gelu"]                   # the convolutions' GELU is always exact
    feats, n_mel = frontend.log_mel(waveforms, lengths, cfg.num_mel_bins,
                                    pad_to_chunk=cfg.pad_to_30s, chunk_samples=cfg.chunk_samples)
    n = encoder_frames(n_mel)
    h = act(conv1d(feats, params["conv1"]["kernel"], 1, cd, padding=(1, 1))
            + params["conv1"]["bias"])
    if not cfg.pad_to_30s:                            # conv2 sees zeros past each utterance
        h = jnp.where(frame_mask(n_mel, feats.shape[1])[..., None], h, 0.0)
    h = act(conv1d(h, params["conv2"]["kernel"], 2, cd, padding=(1, 1)) + params["conv2"]["bias"])
    h = apply_layer_mask(h, masks, "cnn")
    outs = [h]
    t = h.shape[1]
    h = h + params["embed_positions"][:t]
    valid = (jnp.ones((h.shape[0], t), bool) if cfg.pad_to_30s else frame_mask(n, t))
    h = apply_layer_mask(h, masks, "layer_0")
    outs.append(h)
    for i in range(cfg.encoder_layers):
        h = transformer_layer(params["layers"][f"layer_{i}"], cfg, h, valid)
        if i == cfg.encoder_layers - 1:
            h = layer_norm(h, params["layer_norm"], cfg.layer_norm_eps)
        h = apply_layer_mask(h, masks, f"layer_{i + 1}")
        outs.append(h)
    return outs, [n] * len(outs)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """openai-whisper's sinusoidal position table (``whisper/model.py: sinusoids``)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def init_params(rng, cfg: WhisperConfig):
    """Random weights in the shapes of the model (HF ``_init_weights`` style, std 0.02)."""
    gen = numpy_rng(rng)
    d, f, m = cfg.d_model, cfg.encoder_ffn_dim, cfg.num_mel_bins
    normal = lambda *shape: (gen.standard_normal(shape) * 0.02).astype(np.float32)
    zeros = lambda k: np.zeros(k, np.float32)
    norm = lambda: {"scale": np.ones(d, np.float32), "bias": zeros(d)}
    lin = lambda a, b: {"kernel": normal(a, b), "bias": zeros(b)}
    return {
        "conv1": {"kernel": normal(3, m, d), "bias": zeros(d)},
        "conv2": {"kernel": normal(3, d, d), "bias": zeros(d)},
        "embed_positions": sinusoids(cfg.max_source_positions, d),
        "layers": {f"layer_{i}": {"qkv": lin(d, 3 * d), "out": lin(d, d), "attn_norm": norm(),
                                  "final_norm": norm(), "ffn_in": lin(d, f), "ffn_out": lin(f, d)}
                   for i in range(cfg.encoder_layers)},
        "layer_norm": norm(),
    }


@register("whisper", architecture="transformer")
class WhisperEncoder(Encoder):
    """Whisper's audio encoder (any size: tiny ... large-v3, 80 or 128 mel bins)."""

    config_cls = WhisperConfig

    @property
    def layer_names(self) -> list[str]:
        return ["cnn"] + [f"layer_{i}" for i in range(self.config.encoder_layers + 1)]

    def apply(self, params, waveforms, lengths, masks=None):
        return forward(params, self.config, waveforms, lengths, masks)

    def init_params(self, rng):
        return init_params(rng, self.config)

    def min_samples(self) -> int:
        return frontend.N_FFT          # reflect padding needs more than n_fft // 2 samples

    def prepare(self, waveforms, lengths=None, bucket: bool = True):
        """Pad as :meth:`Encoder.prepare`, truncated to the model's window; with ``pad_to_30s``
        every batch has exactly the window's width (one compiled shape)."""
        batch, lens = super().prepare(waveforms, lengths, bucket=bucket)
        chunk = self.config.chunk_samples
        lens = np.minimum(lens, chunk).astype(np.int32)
        width = chunk if self.config.pad_to_30s else min(batch.shape[1], chunk)
        out = np.zeros((batch.shape[0], width), np.float32)
        w = min(width, batch.shape[1])
        out[:, :w] = batch[:, :w]
        return out, lens
