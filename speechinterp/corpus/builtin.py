"""The built-in corpus: real synthesised speech (espeak-ng) with gender, speaker, language,
accent and channel labels, made deterministically from a seed.

Installed Flite / Festival voices can be added as extra speakers (``external_voices``): each
voice is one speaker named ``<engine>_<voice>`` that says English sentences through every
channel; the espeak rows stay exactly as without them."""
from __future__ import annotations

import dataclasses

import numpy as np

from speechinterp.corpus import external_tts
from speechinterp.corpus.channels import CHANNELS
from speechinterp.corpus.sentences import SENTENCES

# English accents of espeak-ng (the dialect analogue) and the voice each uses
ACCENTS = {"us": "en-us", "gb": "en", "scotland": "en-gb-scotland", "rp": "en-gb-x-rp",
           "caribbean": "en-029", "lancashire": "en-gb-x-gbclan", "west_midlands": "en-gb-x-gbcwmd"}
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE = ("f1", "f2", "f3", "f4")
# size -> (speakers per accent, English sentences per speaker, sentences per other language)
SIZES = {"tiny": (3, 4, 1), "small": (5, 24, 3), "medium": (8, 36, 5), "large": (12, 48, 8)}


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a voice variant with its own pitch, range and rate (and accent)."""

    name: str
    gender: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int
    accent: str


def make_speakers(per_accent: int, seed: int) -> list[Speaker]:
    rng = np.random.default_rng(seed)
    out = []
    for a, accent in enumerate(sorted(ACCENTS)):
        for i in range(per_accent):
            gender = "female" if (a + i) % 2 else "male"
            pool = FEMALE if gender == "female" else MALE
            out.append(Speaker(
                name=f"spk{len(out):03d}", gender=gender,
                variant=pool[int(rng.integers(len(pool)))],
                pitch=int(rng.integers(30, 71)), pitch_range=int(rng.integers(30, 81)),
                rate=int(rng.integers(140, 201)), accent=accent))
    return out


@dataclasses.dataclass(frozen=True)
class ExternalVoice:
    """An installed Flite / Festival voice used as one speaker."""

    engine: str
    voice: str
    gender: str
    accent: str
    person: str    # who recorded it: voices of one person share a split

    @property
    def name(self) -> str:
        return f"{self.engine}_{self.voice}"


def external_voices(sources) -> list[ExternalVoice]:
    """The voices named by ``sources`` (``espeak``, ``flite``, ``festival``, ``flite:slt``,
    ``festival:kal_diphone``, ...): an engine alone means all its installed voices.

    Raises :class:`external_tts.TTSNotInstalled` naming a missing program and ``ValueError`` for
    an unknown source or a voice the engine does not have."""
    out: list[ExternalVoice] = []
    for src in sources:
        engine, _, voice = src.partition(":")
        if engine == "espeak" and not voice:
            continue
        if engine not in external_tts.ENGINES:
            raise ValueError(f"unknown voice source {src!r}; known: espeak, "
                             + ", ".join(f"{e}, {e}:VOICE" for e in external_tts.ENGINES))
        have = external_tts.list_voices(engine)
        if voice and voice not in have:
            raise ValueError(f"{engine} has no voice {voice!r}; installed: {have}")
        for v in [voice] if voice else have:
            ev = ExternalVoice(engine, v, *external_tts.voice_info(v))
            if ev not in out:
                out.append(ev)
    return out


def plan(size: str = "small", seed: int = 0,
         extra_voices: tuple[ExternalVoice, ...] | list[ExternalVoice] = ()) -> list[dict]:
    """Every utterance to synthesise: speaker settings, text, language, accent, channel.

    ``extra_voices`` append their rows after the espeak ones (which do not change): English
    sentences, at least one per channel, ``voice`` = ``<engine>:<voice>``."""
    per_accent, n_en, n_other = SIZES[size]
    rng = np.random.default_rng(seed)
    rows = []
    for spk in make_speakers(per_accent, seed):
        items = [("en", SENTENCES["en"][i % len(SENTENCES["en"])]) for i in
                 rng.permutation(max(n_en, len(SENTENCES["en"])))[:n_en]]
        for lang in sorted(SENTENCES):
            if lang != "en":
                pick = rng.permutation(len(SENTENCES[lang]))[:n_other]
                items += [(lang, SENTENCES[lang][i]) for i in pick]
        offset = int(rng.integers(len(CHANNELS)))   # every speaker cycles through every channel
        for j, (lang, text) in enumerate(items):
            voice = ACCENTS[spk.accent] if lang == "en" else lang
            rows.append({
                "utt_id": f"{spk.name}_{j:03d}", "speaker": spk.name, "gender": spk.gender,
                "language": lang, "accent": spk.accent if lang == "en" else "",
                "channel": CHANNELS[(j + offset) % len(CHANNELS)], "text": text,
                "voice": f"{voice}+{spk.variant}", "pitch": spk.pitch,
                "pitch_range": spk.pitch_range, "rate": spk.rate,
            })
    return rows + _external_rows(extra_voices, max(n_en, len(CHANNELS)), seed)


def _external_rows(voices, n_en: int, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 1])   # its own stream: the espeak rows stay the same
    en = SENTENCES["en"]
    rows = []
    for v in voices:
        pick = rng.permutation(max(n_en, len(en)))[:n_en]
        offset = int(rng.integers(len(CHANNELS)))
        for j, i in enumerate(pick):
            rows.append({
                "utt_id": f"{v.name}_{j:03d}", "speaker": v.name, "gender": v.gender,
                "language": "en", "accent": v.accent, "channel": CHANNELS[(j + offset) %
                                                                         len(CHANNELS)],
                "text": en[i % len(en)], "voice": f"{v.engine}:{v.voice}", "pitch": "",
                "pitch_range": "", "rate": "",
            })
    return rows


def synthesize_external(row: dict) -> tuple[np.ndarray, int]:
    """(float32 speech, sample rate) of an ``extra_voices`` row of :func:`plan`."""
    engine, voice = row["voice"].split(":", 1)
    return external_tts.synthesize(engine, voice, row["text"])
