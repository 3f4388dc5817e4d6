"""Real synthetic speech for tests: espeak-ng (espeakng-loader wheel) driven through ctypes.

``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS)``, a synth callback collecting int16 samples,
``espeak_SetVoiceByName``, ``espeak_Synth``; output is 22050 Hz, resampled with librosa.
"""
import ctypes
import functools

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_chunks: list = []


@_CALLBACK
def _collect(wav, n, events):
    if n > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0


@functools.lru_cache(maxsize=1)
def _lib():
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                 espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed")
    lib.espeak_SetSynthCallback(_collect)
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    return lib, rate


@functools.lru_cache(maxsize=32)
def _espeak(text: str, voice: str) -> tuple:
    lib, rate = _lib()
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"espeak voice {voice!r} not found")
    _chunks.clear()
    data = text.encode() + b"\0"
    if lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None) != 0:
        raise RuntimeError("espeak_Synth failed")
    wav = np.concatenate(_chunks).astype(np.float32) / 32768.0
    _chunks.clear()
    return wav, rate


def espeak_wave(text: str, voice: str = "en-us", sample_rate: int = 16000) -> np.ndarray:
    """float32 mono speech of ``text`` at ``sample_rate``."""
    import librosa

    wav, rate = _espeak(text, voice)
    if rate != sample_rate:
        wav = librosa.resample(wav, orig_sr=rate, target_sr=sample_rate)
    return np.asarray(wav, np.float32)
