"""GE2E speaker encoder (Resemblyzer 0.1.4, ``resemblyzer/voice_encoder.py``) in JAX.

Front end (``resemblyzer/audio.py wav_to_mel_spectrogram``): librosa power mel spectrogram, not
log: 16 kHz, n_fft 400 (25 ms), hop 160 (10 ms), periodic Hann, ``center=True`` with zero
padding, 40 Slaney mel bands (``librosa.filters.mel`` defaults). Ported to jnp (rfft + mel
matrix); checked against librosa in tests/test_ge2e.py.

Network: 3-layer LSTM (hidden 256, PyTorch gate order i, f, g, o), Linear 256->256, ReLU, L2.

Utterance embedding (``VoiceEncoder.embed_utterance``, rate 1.3, min_coverage 0.75): the
utterance is cut into partial windows of 160 frames (1.6 s) every 77 frames
(``compute_partial_slices``), the waveform zero-extended past its end; each partial goes through
the LSTM from zero state; the last hidden state of layer 3 -> Linear -> ReLU -> L2 per partial;
the mean of the partial embeddings, L2-normalised again, is the utterance embedding.

Probed layers and their time axes (a design choice of this port):

* ``lstm1``, ``lstm2``, ``lstm3`` (frame level): each layer's output on every partial window,
  the windows concatenated along time, so an utterance with P partials has T = 160 P frames
  (overlapping windows repeat audio; this is exactly what the embedding is computed from).
* ``linear`` (T = 1): the mean over partials of ReLU(Linear(last lstm3 state)), before L2.
* ``embedding`` (T = 1): the L2-normalised utterance embedding, as ``embed_utterance``.

Masks act inside the forward pass: an ``lstmk`` mask multiplies that layer's output sequence
before the next layer reads it (and before its last state feeds ``linear``); a ``linear`` mask
multiplies each partial's ReLU output before its L2 normalisation. Padded partials (utterances
with fewer partials than the batch's longest) are excluded from every mean with masks.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.encoders.base import Encoder, apply_layer_mask, register

HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass
class GE2EConfig:
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    hidden_size: int = 256
    num_layers: int = 3
    embedding_size: int = 256
    partial_frames: int = 160        # hparams.partials_n_frames
    rate: float = 1.3                # embed_utterance defaults
    min_coverage: float = 0.75
    sample_rate: int = 16000

    @property
    def frame_step(self) -> int:
        return int(np.round((self.sample_rate / self.rate) / self.hop_length))


@functools.lru_cache(maxsize=4)
def _mel_constants(sr: int, n_fft: int, n_mels: int):
    import librosa
    import scipy.signal

    window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).astype(np.float32)
    return window, np.ascontiguousarray(mel.T)   # [n_fft], [n_fft//2+1, n_mels]


def num_partials(cfg: GE2EConfig, n_samples):
    """Number of partial windows of ``compute_partial_slices`` for ``n_samples`` (jnp or int)."""
    hop, pf, step = cfg.hop_length, cfg.partial_frames, cfg.frame_step
    xp = jnp if isinstance(n_samples, jax.Array) else np
    n = n_samples
    n_frames = (n + 1 + hop - 1) // hop                    # ceil((n + 1) / hop)
    steps = xp.maximum(1, n_frames - pf + step + 1)
    count = (steps + step - 1) // step
    last_start = (count - 1) * step * hop
    # coverage = (n - start) / (pf * hop) < min_coverage  (exact in float64 as in numpy)
    cov = (n - last_start) / float(pf * hop)
    drop = (cov < cfg.min_coverage) & (count > 1)
    return count - drop.astype(count.dtype) if xp is jnp else int(count - int(drop))


def mel_frames(cfg: GE2EConfig, waveforms, lengths, num_frames: int):
    """Power mel [B, num_frames, n_mels] of the zero-extended waveforms (librosa, center=True)."""
    window, mel_t = _mel_constants(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    b, s = waveforms.shape
    half = cfg.n_fft // 2
    valid = jnp.arange(s)[None, :] < lengths[:, None]
    x = jnp.where(valid, waveforms, 0.0)
    need = (num_frames - 1) * cfg.hop_length + cfg.n_fft
    x = jnp.pad(x, ((0, 0), (half, max(need - half - s, 0))))
    idx = jnp.arange(num_frames)[:, None] * cfg.hop_length + jnp.arange(cfg.n_fft)[None, :]
    frames = x[:, idx] * window                               # [B, F, n_fft]
    spec = jnp.fft.rfft(frames, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    return jnp.einsum("bfk,km->bfm", power, mel_t, precision=HI)


def _lstm_layer(p, x):
    """One PyTorch LSTM layer from zero state, time-major: x [T, N, D] -> outputs [T, N, H].

    Time-major throughout, so the input projection is one plain matrix product (a transposing
    einsum cost XLA's CPU backend twice as much as the product itself)."""
    h_size = p["w_hh"].shape[0]
    xw = jnp.dot(x, p["w_ih"], precision=HI) + p["bias"]

    def step(carry, g_x):
        h, c = carry
        g = g_x + jnp.dot(h, p["w_hh"], precision=HI)
        i, f, gg, o = jnp.split(g, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    n = x.shape[1]
    zero = jnp.zeros((n, h_size), x.dtype)
    _, hs = jax.lax.scan(step, (zero, zero), xw)
    return hs


def _l2(x, axis=-1):
    return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


@register("ge2e", architecture="lstm")
@dataclasses.dataclass
class GE2EEncoder(Encoder):
    """Resemblyzer's GE2E ``VoiceEncoder`` with partial-window utterance embeddings."""

    config_cls = GE2EConfig

    @property
    def layer_names(self) -> list[str]:
        return [f"lstm{i + 1}" for i in range(self.config.num_layers)] + ["linear", "embedding"]

    def max_partials(self, num_samples: int) -> int:
        return num_partials(self.config, int(num_samples))

    def apply(self, params, waveforms, lengths, masks=None):
        c = self.config
        waveforms = jnp.asarray(waveforms, jnp.float32)
        lengths = jnp.asarray(lengths, jnp.int32)
        b, s = waveforms.shape
        p_max = self.max_partials(s)
        n_part = num_partials(c, lengths)                                  # [B]
        n_frames = (p_max - 1) * c.frame_step + c.partial_frames
        mel = mel_frames(c, waveforms, lengths, n_frames)                  # [B, F, 40]
        idx = (jnp.arange(p_max)[:, None] * c.frame_step
               + jnp.arange(c.partial_frames)[None, :])                    # [P, 160]
        h = mel[:, idx].reshape(b * p_max, c.partial_frames, c.n_mels)
        h = jnp.transpose(h, (1, 0, 2))                                    # [160, B*P, 40]
        outs, lens = [], []
        for i in range(c.num_layers):
            name = f"lstm{i + 1}"
            h = _lstm_layer(params[f"lstm_l{i}"], h)
            h = apply_layer_mask(h, masks, name)
            outs.append(jnp.transpose(h, (1, 0, 2)).reshape(b, p_max * c.partial_frames,
                                                           h.shape[-1]))
            lens.append(n_part * c.partial_frames)
        last = h[-1]                                                       # [B*P, H]
        lin = jax.nn.relu(jnp.dot(last, params["linear"]["kernel"], precision=HI)
                          + params["linear"]["bias"])
        lin = apply_layer_mask(lin, masks, "linear").reshape(b, p_max, -1)
        pmask = (jnp.arange(p_max)[None, :] < n_part[:, None]).astype(lin.dtype)[..., None]
        denom = jnp.maximum(pmask.sum(1), 1.0)
        partial_emb = _l2(lin) * pmask
        lin_mean = (lin * pmask).sum(1) / denom
        emb = _l2(partial_emb.sum(1) / denom)
        emb = apply_layer_mask(emb, masks, "embedding")
        one = jnp.ones((b,), jnp.int32)
        outs += [lin_mean[:, None], emb[:, None]]
        lens += [one, one]
        return outs, lens

    def init_params(self, rng):
        """PyTorch's default init: U(-1/sqrt(H), 1/sqrt(H)) for LSTM and Linear."""
        c = self.config
        k = 1.0 / np.sqrt(c.hidden_size)
        keys = jax.random.split(rng, 4 * c.num_layers + 2)
        params = {}
        d_in = c.n_mels
        for i in range(c.num_layers):
            u = functools.partial(jax.random.uniform, minval=-k, maxval=k)
            params[f"lstm_l{i}"] = {
                "w_ih": u(keys[4 * i], (d_in, 4 * c.hidden_size)),
                "w_hh": u(keys[4 * i + 1], (c.hidden_size, 4 * c.hidden_size)),
                # bias_ih + bias_hh, each U(-k, k), as one summed bias
                "bias": (u(keys[4 * i + 2], (4 * c.hidden_size,))
                         + u(keys[4 * i + 3], (4 * c.hidden_size,))),
            }
            d_in = c.hidden_size
        params["linear"] = {
            "kernel": jax.random.uniform(keys[-2], (c.hidden_size, c.embedding_size),
                                         minval=-k, maxval=k),
            "bias": jax.random.uniform(keys[-1], (c.embedding_size,), minval=-k, maxval=k),
        }
        return jax.tree.map(np.asarray, params)

    def min_samples(self) -> int:
        return 400
