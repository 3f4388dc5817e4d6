"""Real synthetic speech for tests: espeak-ng through :mod:`speechinterp.corpus.espeak`,
resampled with librosa."""
import functools

import numpy as np


@functools.lru_cache(maxsize=32)
def _espeak(text: str, voice: str):
    from speechinterp.corpus import espeak

    wav = espeak.synthesize(text, voice)
    if wav.size == 0:
        raise RuntimeError(f"espeak produced no audio for {voice!r}")
    return wav.astype(np.float32) / 32768.0, espeak.sample_rate()


def espeak_wave(text: str, voice: str = "en-us", sample_rate: int = 16000) -> np.ndarray:
    """float32 mono speech of ``text`` at ``sample_rate``."""
    import librosa

    wav, rate = _espeak(text, voice)
    if rate != sample_rate:
        wav = librosa.resample(wav, orig_sr=rate, target_sr=sample_rate)
    return np.asarray(wav, np.float32)
