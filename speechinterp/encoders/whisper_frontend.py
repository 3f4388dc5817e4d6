"""Whisper's log-mel front end in jnp, equal to transformers' ``WhisperFeatureExtractor``.

Follows ``WhisperFeatureExtractor`` (transformers 5.x) and openai-whisper's ``log_mel_spectrogram``:
a centred STFT (``n_fft`` 400, hop 160, periodic Hann window, reflect padding of ``n_fft // 2``)
of the waveform, the power spectrum, the last frame dropped, a Slaney-normalised mel filterbank
(librosa's, 0-8 kHz), ``log10(max(mel, 1e-10))``, clamped from below at ``max - 8`` per
utterance, then ``(x + 4) / 4``.

Two ways to treat length, both exact references:

* ``pad_to_chunk=True``: every waveform is zero-padded (or truncated) to ``chunk_samples`` (30 s
  for the released models) before the STFT, as the feature extractor's default
  ``padding="max_length"`` does; all ``chunk_samples // hop`` frames are returned.
* ``pad_to_chunk=False``: each utterance's features are those of the extractor run on that
  utterance alone with ``padding="longest"`` (its own reflect padding at its own end, its own
  maximum); ``lengths // hop`` valid frames per row, padding frames set to 0.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

N_FFT = 400
HOP_LENGTH = 160
SAMPLE_RATE = 16000


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] Slaney mel filterbank (librosa's, as openai-whisper ships it)."""
    import librosa

    return np.ascontiguousarray(
        librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, dtype=np.float32).T)


@functools.lru_cache(maxsize=2)
def _dft_matrices(n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """Periodic-Hann-windowed real DFT as two [n_fft, n_fft // 2 + 1] matrices (cos, -sin)."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    ang = 2 * np.pi * np.outer(n, np.arange(n_fft // 2 + 1)) / n_fft
    return ((window[:, None] * np.cos(ang)).astype(np.float32),
            (-window[:, None] * np.sin(ang)).astype(np.float32))


def num_frames(lengths, hop_length: int = HOP_LENGTH):
    """Valid feature frames for ``lengths`` samples (the extractor drops the last STFT frame)."""
    return lengths // hop_length


def frame_indices(lengths: jax.Array, frames: int, n_fft: int = N_FFT,
                  hop_length: int = HOP_LENGTH) -> jax.Array:
    """[B, frames, n_fft] sample indices of centred frames, reflect-padded at each row's end."""
    idx = (jnp.arange(frames)[:, None] * hop_length - n_fft // 2 + jnp.arange(n_fft)[None, :])
    idx = jnp.abs(idx)[None]                                  # reflect at the start
    last = (lengths - 1)[:, None, None]
    idx = jnp.where(idx > last, 2 * last - idx, idx)           # reflect at each row's end
    return jnp.clip(idx, 0, None)


def log_mel(waveforms: jax.Array, lengths: jax.Array, n_mels: int, *, pad_to_chunk: bool,
            chunk_samples: int) -> tuple[jax.Array, jax.Array]:
    """``(features [B, T, n_mels], speech frames [B])`` from ``waveforms`` [B, S] at 16 kHz.

    With ``pad_to_chunk`` the batch is cut or zero-padded to ``chunk_samples`` and T is
    ``chunk_samples // 160``; otherwise T is ``S // 160`` and rows keep their own length.
    Speech frames (``lengths // 160``) count the frames of the utterance itself, not of the
    zero padding that follows it.
    """
    b, s = waveforms.shape
    lengths = jnp.minimum(lengths, chunk_samples)
    x = jnp.where(jnp.arange(s)[None, :] < lengths[:, None], waveforms, 0.0)
    if pad_to_chunk:
        x = x[:, :chunk_samples] if s >= chunk_samples else jnp.pad(
            x, ((0, 0), (0, chunk_samples - s)))
        stft_lengths = jnp.full((b,), chunk_samples, jnp.int32)
    else:
        stft_lengths = lengths
    t = x.shape[1] // HOP_LENGTH
    idx = frame_indices(stft_lengths, t)
    frames = jnp.take_along_axis(x[:, None, :], idx.reshape(b, 1, -1), axis=2).reshape(b, t, N_FFT)
    cos, sin = _dft_matrices()
    hi = jax.lax.Precision.HIGHEST
    power = (jnp.square(jnp.matmul(frames, cos, precision=hi))
             + jnp.square(jnp.matmul(frames, sin, precision=hi)))
    mel = jnp.matmul(power, mel_filters(n_mels), precision=hi)
    logs = jnp.log10(jnp.maximum(mel, 1e-10))
    valid = (jnp.arange(t)[None, :] < num_frames(stft_lengths)[:, None])[..., None]
    top = jnp.max(jnp.where(valid, logs, -jnp.inf), axis=(1, 2), keepdims=True)
    feats = (jnp.maximum(logs, top - 8.0) + 4.0) / 4.0
    return jnp.where(valid, feats, 0.0), num_frames(lengths)
