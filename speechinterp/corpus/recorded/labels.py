"""The labelling rules of the recorded corpus: one small function or table per source.

Each rule says where its convention is documented; a label no rule gives stays empty (unknown),
never guessed.
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

import numpy as np


def fold_accents(s: str) -> str:
    """``MÉO069`` -> ``MEO069``, ``trñ00`` -> ``trn00`` (NFKD, combining marks dropped).

    pyannote's test data spells some names with accents on purpose (RTTM speaker ``MÉO069``,
    file ``trñ00.wav`` listed as ``trn00`` in the RTTM); AMI ids themselves are ASCII.
    """
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


def ami_speaker(raw: str) -> str:
    """The AMI speaker id as AMI spells it: accents folded, upper case (``MÉO069`` -> MEO069)."""
    return fold_accents(raw).upper()


def ami_gender(speaker: str) -> str:
    """AMI participant ids start with the gender: ``F...`` female, ``M...`` male, else unknown.

    (AMI Meeting Corpus participant naming: ``[FM][EO]E?\\d{3}``, e.g. ``FEE087``, ``MEO069``.)
    """
    s = ami_speaker(speaker)
    return {"F": "female", "M": "male"}.get(s[:1], "")


@dataclass(frozen=True)
class Turn:
    uri: str
    start: float
    end: float
    speaker: str
    overlapped: bool = False   # another speaker talks during part of it


def parse_rttm(text: str) -> list[Turn]:
    """RTTM ``SPEAKER <uri> <chan> <onset> <duration> <NA> <NA> <speaker> ...`` lines -> turns.

    The uri is accent-folded (so it matches the audio file name folded the same way), the
    speaker mapped through :func:`ami_speaker`; other line types and comments are skipped.
    """
    turns = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 8 or f[0] != "SPEAKER":
            continue
        start, dur = float(f[3]), float(f[4])
        turns.append(Turn(fold_accents(f[1]), start, start + dur, ami_speaker(f[7])))
    return turns


def _subtract(a: tuple, others: list) -> list:
    """The pieces of the interval ``a`` that none of the ``others`` intervals covers."""
    pieces = [a]
    for (s, e) in others:
        nxt = []
        for (ps, pe) in pieces:
            if e <= ps or s >= pe:
                nxt.append((ps, pe))
                continue
            if s > ps:
                nxt.append((ps, s))
            if e < pe:
                nxt.append((e, pe))
        pieces = nxt
    return pieces


def ami_segments(turns: list[Turn], min_s: float = 1.0, max_s: float = 8.0,
                 fallback_min_s: float = 0.3) -> list[Turn]:
    """Single-speaker segments from RTTM turns.

    Each turn loses the stretches where another speaker talks in the same file (overlap), the
    remaining pieces shorter than ``min_s`` are skipped and longer ones than ``max_s`` cut into
    equal pieces of at most ``max_s``. A speaker left with no piece gets its longest
    overlap-free piece if that is at least ``fallback_min_s`` long, else its longest whole turn
    (``overlapped=True``, first ``max_s`` seconds) if that is, so that no AMI speaker is lost.
    """
    by_uri = defaultdict(list)
    for t in turns:
        by_uri[t.uri].append(t)
    pieces = []
    for uri, ts in by_uri.items():
        for t in ts:
            others = [(o.start, o.end) for o in ts if o.speaker != t.speaker]
            pieces += [Turn(uri, s, e, t.speaker) for s, e in _subtract((t.start, t.end), others)]
    out = []
    for p in pieces:
        d = p.end - p.start
        if d < min_s:
            continue
        n = int(np.ceil(d / max_s))
        step = d / n
        out += [Turn(p.uri, p.start + k * step, p.start + (k + 1) * step, p.speaker)
                for k in range(n)]
    have = {t.speaker for t in out}
    for spk in sorted({t.speaker for t in turns} - have):
        best = max((p for p in pieces if p.speaker == spk), key=lambda p: p.end - p.start,
                   default=None)
        if best is not None and best.end - best.start >= fallback_min_s:
            out.append(best)
            continue
        whole = max((t for t in turns if t.speaker == spk), key=lambda t: t.end - t.start)
        if whole.end - whole.start >= fallback_min_s:
            out.append(Turn(whole.uri, whole.start, min(whole.end, whole.start + max_s), spk,
                            True))
    return sorted(out, key=lambda t: (t.speaker, t.uri, t.start))


def speakerbox_speaker(member: str) -> str:
    """``<meeting>/<surname>/<start>-<end>.wav`` in ``diarized.zip``: the folder names the speaker.

    speakerbox's workflow renames each diarized folder to the speaker's identifier; gender is
    not documented there, so :func:`speakerbox_gender` gives none.
    """
    parts = member.strip("/").split("/")
    return parts[-2].lower() if len(parts) >= 2 else ""


def speakerbox_gender(speaker: str) -> str:
    """Unknown: the package documents only surnames; no gender is guessed."""
    return ""


@dataclass(frozen=True)
class Voice:
    voice: str         # the voice's documented name (speaker id: ``<family>_<voice>``)
    language: str      # ISO 639-1
    gender: str        # "female" / "male" / "" (unknown)
    evidence: str = ""


_ASTERISK_DIR = re.compile(r"^([a-z]{2})_([A-Z]{2})_([fm])_([A-Za-z0-9]+)$")
# prompt packages without Asterisk's folder convention: their sounds sit in ``sounds/<lang>``
ASTERISK_PROMPTS = {
    "asterisk-prompt-fr-armelle": Voice("Armelle", "fr", "female",
                                        "debian/copyright: 'Voice actor: Armelle Desjardins'"),
    "asterisk-prompt-es-co": Voice("July", "es", "female",
                                   "LEEME: 'grabados ... con la voz de July E. Jimenez'"),
}


def asterisk_voice(folder: str) -> Voice | None:
    """Asterisk's sounds folder ``<lang>_<REGION>_<f|m>_<Voice>`` -> voice, language, gender.

    e.g. ``en_US_f_Allison`` -> Allison, en, female; ``it_IT_m_Carlo`` -> Carlo, it, male.
    One voice in two languages (Allison: ``en_US`` and ``es_MX``) is one speaker.
    """
    m = _ASTERISK_DIR.match(os.path.basename(folder.rstrip("/")))
    if not m:
        return None
    lang, _, g, name = m.groups()
    return Voice(name, lang, {"f": "female", "m": "male"}[g], f"folder {m.group(0)}")


def fillets_role(filename: str) -> str:
    """Fish Fillets NG dialogue files ``<level>-<who>-<line>.ogg``: ``m`` is the small fish
    (Czech *malá*), ``v`` the big fish (*velká*); other speakers (props, parrots, ...) -> ""."""
    m = re.match(r"^[^-]+-(m|v)-", os.path.basename(filename))
    return {"m": "small", "v": "big"}.get(m.group(1), "") if m else ""


FILLETS_ROLE_GENDER = {"small": "female", "big": "male"}
"""The game's two heroes: the small orange fish is a woman, the big blue fish a man, each
dubbed by one actor per language (a male and a female voice per language)."""

# KLettres handbook, "Credits and License" (doc/HTML/en/klettres): one credited voice per
# language; languages credited to two voices (pt_BR, nds, es, sk) or to none are left out.
KLETTRES_VOICES = {
    "cs": Voice("Eva_Mikulcikova", "cs", "female", "Czech sounds: Eva Mikulčíková"),
    "da": Voice("Erik_Kjaer_Pedersen", "da", "male", "Danish sounds: Erik Kjaer Pedersen"),
    "de": Voice("Helmut_Kriege", "de", "male", "German sounds: Helmut Kriege"),
    "en": Voice("Robert_Wadley", "en", "male", "English sounds: Robert Wadley"),
    "fr": Voice("Ludovic_Grossard", "fr", "male", "French sounds: Ludovic Grossard"),
    "he": Voice("Assaf_Gorgon", "he", "male", "Hebrew sounds: Assaf Gorgon"),
    "it": Voice("Pietro_Pasotti", "it", "male", "Italian sounds: Pietro Pasotti"),
    "nl": Voice("Geert_Stams", "nl", "male", "Dutch sounds: Geert Stams"),
}
# tuxpaint-stamps changelog: "Descriptive sounds" credits, one voice per language; French
# (PaulK and Jacques Chion) and uncredited languages are left out; "Tabbytha" gives no gender.
TUXPAINT_VOICES = {
    "be": Voice("Kseniya_Buraya", "be", "female", "Descriptive sounds by Kseniya Buraya"),
    "bg": Voice("Krasimir_Petkov", "bg", "male", "Descriptive sounds Krasimir Petkov"),
    "da": Voice("Joe_Dalton", "da", "male", "Danish descriptive sounds: Joe Dalton"),
    "el": Voice("Kiriaki_Serafeim", "el", "female", "Greek descriptive sounds: Kiriaki Serafeim"),
    "es": Voice("Estefania_Ortiz", "es", "female", "Descriptive sounds Estefanía Ortiz"),
    "ro": Voice("Tabbytha", "ro", "", "Descriptive sounds by GCI students: Romanian: Tabbytha"),
    "ru": Voice("Edwin_Veber", "ru", "male",
                "Descriptive sounds by GCI students: Rusian: Edwin Veber"),
}
