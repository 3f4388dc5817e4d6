"""SpeechBrain's filterbank front end and sentence normalisation in jnp (no torch).

Ports of ``speechbrain.lobes.features.Fbank`` (speechbrain 1.1.2, defaults: no deltas, no
context, frozen filters) and ``speechbrain.processing.features.InputNormalization`` with
``norm_type="sentence"``, as the published ``spkrec-xvect-voxceleb`` (24 mels) and
``spkrec-ecapa-voxceleb`` (80 mels) hyperparameters use them:

* ``STFT``: Hamming window (``torch.hamming_window``, periodic) of ``win_length`` ms, hop
  ``hop_length`` ms (both rounded to samples), ``n_fft`` points, ``center=True`` with zero
  padding of ``n_fft // 2`` on both sides, so ``1 + S // hop`` frames;
* ``spectral_magnitude(power=1)``: the power spectrum ``re^2 + im^2``;
* ``Filterbank``: SpeechBrain's own triangular filters on the HTK mel scale
  (``2595 log10(1 + f/700)``): ``n_mels + 2`` points equally spaced in mel between ``f_min`` and
  ``f_max`` (default ``sample_rate // 2``), filter ``m`` centred on point ``m + 1`` with
  half-width ``band = hz[m+1] - hz[m]`` on both sides (``max(0, 1 - |f - f_c| / band)``),
  frequencies ``linspace(0, sr // 2, n_fft // 2 + 1)``; then ``10 log10(max(x, amin))`` minus
  ``10 log10(max(amin, ref_value))`` and the ``top_db`` floor (``max(x, max(x) - top_db)``, the
  max taken over the whole utterance);
* ``InputNormalization(norm_type="sentence", std_norm=False)``: subtract each utterance's mean
  feature vector over its valid frames (``std_norm=True`` also divides by the biased std,
  clamped at ``epsilon``).

Padding: the waveform is zeroed past each utterance's length, so every valid frame
(``t < 1 + n // hop``) sees exactly what the unpadded utterance's STFT sees (its own zero
``center`` padding); the ``top_db`` maximum and the sentence statistics use valid frames only,
so a padded batch equals single runs.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

HI = jax.lax.Precision.HIGHEST


def samples(ms: float, sample_rate: int) -> int:
    """``int(round(sample_rate / 1000 * ms))``, as ``STFT.__init__``."""
    return int(round((sample_rate / 1000.0) * ms))


def num_frames(num_samples, hop: int):
    """Frames of the centred STFT: ``1 + n // hop`` (ints or arrays)."""
    return 1 + num_samples // hop


@functools.lru_cache(maxsize=16)
def hamming(win_length: int, n_fft: int) -> np.ndarray:
    """``torch.hamming_window(win_length)`` (periodic), centred in ``n_fft`` as ``torch.stft``."""
    n = np.arange(win_length, dtype=np.float64)
    w = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft)
    out[left:left + win_length] = w
    return out.astype(np.float32)


@functools.lru_cache(maxsize=16)
def filterbank_matrix(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                      f_max: float | None) -> np.ndarray:
    """SpeechBrain's triangular mel filterbank as a [n_fft // 2 + 1, n_mels] float32 matrix."""
    if f_max is None:
        f_max = sample_rate // 2
    to_mel = lambda hz: 2595 * math.log10(1 + hz / 700)
    mel = np.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2).astype(np.float32)
    hz = (700 * (10 ** (mel / np.float32(2595)) - 1)).astype(np.float32)
    band = (hz[1:] - hz[:-1])[:-1]
    f_central = hz[1:-1]
    all_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1).astype(np.float32)
    slope = (all_freqs[None, :] - f_central[:, None]) / band[:, None]     # [n_mels, n_stft]
    tri = np.maximum(0.0, np.minimum(slope + 1.0, -slope + 1.0))
    return np.ascontiguousarray(tri.T.astype(np.float32))


def fbank(waveforms, lengths, *, sample_rate: int = 16000, n_fft: int = 400, n_mels: int = 40,
          win_length: float = 25, hop_length: float = 10, f_min: float = 0,
          f_max: float | None = None, amin: float = 1e-10, ref_value: float = 1.0,
          top_db: float = 80.0):
    """Log mel filterbanks [B, F, n_mels] (dB) and valid frame counts [B] (SpeechBrain Fbank).

    ``waveforms`` float32 [B, S], ``lengths`` int32 [B] valid samples; frames at and past
    ``1 + lengths // hop`` are padding (zeroed).
    """
    hop = samples(hop_length, sample_rate)
    win = samples(win_length, sample_rate)
    if win > n_fft:
        raise ValueError(f"win_length {win} samples exceeds n_fft {n_fft}")
    b, s = waveforms.shape
    n_out = num_frames(s, hop)
    valid = jnp.arange(s)[None, :] < lengths[:, None]
    x = jnp.where(valid, waveforms.astype(jnp.float32), 0.0)
    half = n_fft // 2
    need = (n_out - 1) * hop + n_fft
    x = jnp.pad(x, ((0, 0), (half, max(need - half - s, 0))))
    idx = jnp.arange(n_out)[:, None] * hop + jnp.arange(n_fft)[None, :]
    frames = x[:, idx] * hamming(win, n_fft)                            # [B, F, n_fft]
    spec = jnp.fft.rfft(frames, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    mel = filterbank_matrix(sample_rate, n_fft, n_mels, f_min, f_max)
    fb = jnp.einsum("bfk,km->bfm", power, mel, precision=HI)
    db = 10.0 * jnp.log10(jnp.maximum(fb, amin)) - 10.0 * math.log10(max(amin, ref_value))
    n = num_frames(lengths, hop)
    fmask = (jnp.arange(n_out)[None, :] < n[:, None])[..., None]
    top = jnp.max(jnp.where(fmask, db, -jnp.inf), axis=(1, 2), keepdims=True) - top_db
    db = jnp.maximum(db, top)
    return jnp.where(fmask, db, 0.0), n


def sentence_norm(feats, n_frames, std_norm: bool = False, epsilon: float = 1e-10):
    """``InputNormalization(norm_type="sentence")``: mean (and std) over valid frames."""
    fmask = (jnp.arange(feats.shape[1])[None, :] < n_frames[:, None])[..., None]
    m = fmask.astype(feats.dtype)
    count = jnp.maximum(m.sum(1, keepdims=True), 1.0)
    mean = (feats * m).sum(1, keepdims=True) / count
    out = feats - mean
    if std_norm:
        std = jnp.sqrt(jnp.square(out * m).sum(1, keepdims=True) / count)
        out = out / jnp.maximum(std, epsilon)
    return jnp.where(fmask, out, 0.0)
