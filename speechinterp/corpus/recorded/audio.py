"""Reading the audio of planned utterances: 16 kHz mono float32, at most :data:`MAX_S` seconds."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from speechinterp.corpus.recorded.planning import Item

SR = 16000
MAX_S = 8.0        # an utterance is cut to its first MAX_S seconds


def durations(paths, fmt=None) -> list[float]:
    """Seconds of each file (raw GSM from its size); an unreadable file gets 0 (never picked)."""
    import soundfile as sf
    out = []
    for p in paths:
        try:
            if fmt == "gsm":
                out.append(os.path.getsize(p) / 33 * 160 / 8000)
            else:
                out.append(sf.info(p).duration)
        except Exception:   # unreadable file: never picked
            out.append(0.0)
    return out


def _read_piece(path, start, end, fmt):
    """``(samples, rate)`` of ``path`` from ``start`` to ``end`` seconds (None: the edge),
    mixed to mono; ``fmt="gsm"`` reads raw 8 kHz GSM 06.10."""
    import soundfile as sf
    if fmt == "gsm":
        x, sr = sf.read(path, format="RAW", subtype="GSM610", samplerate=8000, channels=1,
                        dtype="float32")
    else:
        info = sf.info(path)
        sr = info.samplerate
        a = 0 if start is None else int(round(start * sr))
        b = -1 if end is None else int(round(end * sr))
        x, sr = sf.read(path, start=a, stop=None if b < 0 else b, dtype="float32",
                        always_2d=True)
        x = x.mean(axis=1)
    return np.asarray(x, np.float32), sr


def load_item(it: Item) -> np.ndarray:
    """The utterance at 16 kHz mono float32: pieces read, trimmed if short clips, joined with
    0.15 s of silence, resampled, cut to :data:`MAX_S`, peak-normalised to 0.9 when louder."""
    import librosa
    parts = []
    for (p, s, e, fmt) in it.pieces:
        x, sr = _read_piece(p, s, e, fmt)
        if sr != SR:
            x = librosa.resample(x, orig_sr=sr, target_sr=SR)
        if it.trim and x.size:
            x, _ = librosa.effects.trim(x, top_db=35)
        if parts:
            parts.append(np.zeros(int(0.15 * SR), np.float32))
        parts.append(x.astype(np.float32))
    y = np.concatenate(parts)[:int(MAX_S * SR)] if parts else np.zeros(0, np.float32)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak * 0.9 if peak > 0.99 else y
