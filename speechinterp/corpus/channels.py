"""Recording / transmission conditions, simulated in memory with real codecs (libsndfile)."""
from __future__ import annotations

import io

import librosa
import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, sosfiltfilt

CHANNELS = ("clean", "telephone_ulaw", "gsm", "mp3", "opus8k", "reverb", "noisy10db")


def _codec(x: np.ndarray, sr: int, fmt: str, subtype: str | None, **kw) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype, **kw)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return y[:len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def _at_8k(x, sr, fn):
    y = librosa.resample(x, orig_sr=sr, target_sr=8000)
    y = fn(y.astype(np.float32))
    return librosa.resample(y, orig_sr=8000, target_sr=sr)[:len(x)]


def apply_channel(x: np.ndarray, sr: int, channel: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` (float32, ``sr`` Hz) through ``channel``; returns float32 at ``sr``."""
    x = np.asarray(x, np.float32)
    if channel == "clean":
        y = x
    elif channel == "telephone_ulaw":   # 300-3400 Hz band, 8 kHz mu-law
        sos = butter(6, [300, 3400], btype="bandpass", fs=sr, output="sos")
        y = _at_8k(sosfiltfilt(sos, x), sr, lambda z: _codec(z, 8000, "WAV", "ULAW"))
    elif channel == "gsm":              # GSM 06.10 full rate at 8 kHz
        y = _at_8k(x, sr, lambda z: _codec(z, 8000, "WAV", "GSM610"))
    elif channel == "mp3":              # MPEG layer III, constant low bitrate
        y = _codec(x, sr, "MP3", "MPEG_LAYER_III", bitrate_mode="CONSTANT",
                   compression_level=0.99)
    elif channel == "opus8k":           # Ogg Opus at 8 kHz
        y = _at_8k(x, sr, lambda z: _codec(z, 8000, "OGG", "OPUS"))
    elif channel == "reverb":           # synthetic room: exponentially decaying noise, RT60 0.5 s
        n = int(0.5 * sr)
        t = np.arange(n) / sr
        rir = rng.normal(0, 1, n) * np.exp(-6.9 * t / 0.5)
        rir[0] = 1.0
        y = fftconvolve(x, rir / np.sqrt(np.sum(rir ** 2)))[:len(x)]
    elif channel == "noisy10db":        # white noise at 10 dB SNR
        noise = rng.normal(0, 1, len(x))
        p_sig = np.mean(x ** 2) + 1e-12
        y = x + noise * np.sqrt(p_sig / (10 ** (10 / 10)) / np.mean(noise ** 2))
    else:
        raise ValueError(f"unknown channel {channel!r}; known: {CHANNELS}")
    y = np.asarray(y, np.float32)
    peak = np.max(np.abs(y)) if y.size else 0
    return y / peak * 0.9 if peak > 0.99 else y
