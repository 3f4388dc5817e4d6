"""In-process espeak-ng synthesis (the library bundled by the ``espeakng-loader`` wheel, ctypes).

``espeak_Initialize`` in synchronous mode, a synth callback collecting int16 samples,
``espeak_SetVoiceByName`` (voice + variant, e.g. ``en-us+f2``), ``espeak_SetParameter`` for
rate / pitch / range, ``espeak_Synth``. Output is 22050 Hz int16.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
RATE, PITCH, RANGE = 1, 3, 4
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
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                 espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed")
    lib.espeak_SetSynthCallback(_collect)
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    return lib, rate


def sample_rate() -> int:
    return _lib()[1]


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50,
               pitch_range: int = 50, seed: int = 0) -> np.ndarray:
    """int16 speech of ``text`` (22050 Hz) for an espeak ``voice`` (``lang+variant``).

    Breathy variants draw random noise: ``espeak_ng_SetRandSeed(seed)`` before each utterance
    makes the output reproducible."""
    lib, _ = _lib()
    lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"espeak voice {voice!r} not found")
    for p, v in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range)):
        lib.espeak_SetParameter(p, int(v), 0)
    _chunks.clear()
    data = text.encode() + b"\0"
    if lib.espeak_Synth(data, len(data), 0, 0, 0, 0x1, None, None) != 0:   # 0x1: UTF-8 text
        raise RuntimeError(f"espeak_Synth failed for {voice!r}")
    wav = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
    _chunks.clear()
    return wav.astype(np.int16)
