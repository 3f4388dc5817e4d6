"""Load, resample and validate audio (soundfile first, librosa/audioread for other formats)."""
from __future__ import annotations

import os

import numpy as np

MIN_RATE, MAX_RATE = 1000, 384000   # sample rates outside this are a broken header


class AudioError(ValueError):
    """An audio file cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def load_audio(path: str, sample_rate: int = 16000, min_seconds: float = 0.1,
               strict_rate: bool = False) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``.

    Raises :class:`AudioError` (naming the file) for a missing or unreadable file, a sample rate
    outside [``MIN_RATE``, ``MAX_RATE``] Hz (a broken header; checked before resampling), an empty
    or too-short signal, non-finite samples, all-zero audio, or (``strict_rate``) a file whose
    own rate differs from ``sample_rate``.
    """
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file")
    try:
        import soundfile as sf
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
    except Exception as sf_err:  # formats libsndfile cannot read: try librosa / audioread
        try:
            import librosa
            wav, sr = librosa.load(path, sr=None, mono=True)
        except Exception as e:
            raise AudioError(path, f"unreadable audio ({type(sf_err).__name__}: {sf_err}; "
                                   f"{type(e).__name__}: {e})") from e
    if not MIN_RATE <= sr <= MAX_RATE:
        raise AudioError(path, f"implausible sample rate {sr} Hz in the header (expected "
                               f"{MIN_RATE}-{MAX_RATE} Hz)")
    if strict_rate and sr != sample_rate:
        raise AudioError(path, f"sample rate {sr} Hz, expected {sample_rate} Hz")
    wav = np.asarray(wav, np.float32)
    if wav.size == 0:
        raise AudioError(path, "no samples")
    if not np.all(np.isfinite(wav)):
        raise AudioError(path, f"{int(np.sum(~np.isfinite(wav)))} non-finite samples (NaN/inf)")
    if not np.any(wav):
        raise AudioError(path, "all samples are zero")
    if wav.size < min_seconds * sr:
        raise AudioError(path, f"too short: {wav.size / sr:.3f} s < {min_seconds} s")
    if sr != sample_rate:
        import librosa
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
    return wav
