"""Installed speech synthesisers as extra built-in-corpus speakers: Flite and Festival.

Both run as programs (subprocess) into a temporary wav: ``flite -voice V -t TEXT -o OUT`` and
``text2wave -o OUT -eval "(voice_V)" TEXT_FILE``. Voices are listed with ``flite -lv`` and
``festival -b "(print (voice.list))"``. Their genders (and US / Scottish accents) come from a
table of known voices: the CMU ARCTIC speakers (Kominek & Black, 2004), the Festival diphone and
MBROLA voices; a voice not in the table gets an empty (missing) gender. Flite's limited-domain
voices (``awb_time``: clock times only) are left out.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

ENGINES = ("flite", "festival")
PROGRAMS = {"flite": ("flite",), "festival": ("festival", "text2wave")}
PACKAGES = {"flite": "flite", "festival": "festival festvox-kallpc16k"}
LIMITED_DOMAIN = ("awb_time",)
# speaker code -> (gender, accent); accents named as in builtin.ACCENTS where they match one
ARCTIC = {"awb": ("male", "scotland"), "bdl": ("male", "us"), "clb": ("female", "us"),
          "jmk": ("male", ""), "ksp": ("male", ""), "rms": ("male", "us"),
          "slt": ("female", "us"), "aew": ("male", "us"), "ahw": ("male", ""),
          "aup": ("male", ""), "axb": ("female", ""), "eey": ("female", "us"),
          "fem": ("male", "us"), "gka": ("male", ""), "ljm": ("female", "us"),
          "lnh": ("female", "us"), "rxr": ("male", "us"), "slp": ("female", "")}
KNOWN = {"kal": ("male", "us"), "kal16": ("male", "us"), "kal_diphone": ("male", "us"),
         "ked_diphone": ("male", "us"), "rab_diphone": ("male", ""),
         "don_diphone": ("male", ""), "en1_mbrola": ("male", ""), "us1_mbrola": ("female", "us"),
         "us2_mbrola": ("male", "us"), "us3_mbrola": ("male", "us")}
# voices recorded by the same person (Flite's kal / kal16 and Festival's kal_diphone are Kal)
TALENT = {"kal16": "kal", "kal_diphone": "kal"}
_ARCTIC_NAME = re.compile(r"^(?:cmu|nitech)_us_([a-z]{3})(?:_|$)")


class TTSNotInstalled(RuntimeError):
    """A synthesiser's program is not on PATH; the message names it and how to install it."""


class TTSError(RuntimeError):
    """A synthesiser failed or does not have the voice asked for."""


def programs(engine: str) -> dict[str, str]:
    """{program name: path} of ``engine``; raises :class:`TTSNotInstalled` naming a missing one."""
    if engine not in PROGRAMS:
        raise ValueError(f"unknown synthesiser {engine!r}; known: {ENGINES}")
    found = {}
    for prog in PROGRAMS[engine]:
        path = shutil.which(prog)
        if path is None:
            raise TTSNotInstalled(
                f"voices from {engine} need the `{prog}` program on PATH, and it is not "
                f"installed (Debian / Ubuntu: apt-get install {PACKAGES[engine]})")
        found[prog] = path
    return found


def _run(cmd: list[str], what: str) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TTSError(f"{what}: {' '.join(cmd)} failed: {e}") from e
    if p.returncode != 0:
        raise TTSError(f"{what}: {' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return p.stdout + p.stderr


def list_voices(engine: str) -> list[str]:
    """Installed voices of ``engine`` (limited-domain voices left out), as the program lists
    them."""
    exe = programs(engine)
    if engine == "flite":
        out = _run([exe["flite"], "-lv"], "listing flite voices")
        m = re.search(r"Voices available:(.*)", out)
        names = m.group(1).split() if m else []
    else:
        out = _run([exe["festival"], "-b", "(print (voice.list))"], "listing festival voices")
        lists = re.findall(r"\(([^()]*)\)", out)
        names = lists[-1].split() if lists else []
    names = [n for n in names if n not in LIMITED_DOMAIN]
    if not names:
        raise TTSError(f"{engine} lists no voices (output: {out.strip()[:300]!r})")
    return names


def voice_info(voice: str) -> tuple[str, str, str]:
    """(gender, accent, person) of a voice from the known-voice tables: gender and accent are
    empty when unknown; ``person`` names who recorded it (the voice itself when unknown), so
    that one person's voices can be kept in one split."""
    if voice in KNOWN:
        return (*KNOWN[voice], TALENT.get(voice, voice))
    m = _ARCTIC_NAME.match(voice)
    code = m.group(1) if m else voice
    return (*ARCTIC.get(code, ("", "")), code)


def synthesize(engine: str, voice: str, text: str) -> tuple[np.ndarray, int]:
    """(float32 mono speech, sample rate) of ``text`` in ``voice``; raises :class:`TTSError`
    when the program fails or writes no audio."""
    import soundfile as sf

    exe = programs(engine)
    with tempfile.TemporaryDirectory(prefix=f"{engine}_") as d:
        out = os.path.join(d, "out.wav")
        if engine == "flite":
            _run([exe["flite"], "-voice", voice, "-t", text, "-o", out], f"flite voice {voice}")
        else:
            txt = os.path.join(d, "in.txt")
            with open(txt, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            _run([exe["text2wave"], "-o", out, "-eval", f"(voice_{voice})", txt],
                 f"festival voice {voice}")
        if not os.path.isfile(out) or os.path.getsize(out) == 0:
            raise TTSError(f"{engine} voice {voice!r} wrote no audio for {text!r}")
        wav, sr = sf.read(out, dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if wav.size == 0 or not np.any(wav):
        raise TTSError(f"{engine} voice {voice!r} wrote silence for {text!r}")
    return wav, int(sr)
