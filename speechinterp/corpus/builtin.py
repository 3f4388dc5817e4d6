"""The built-in corpus: real synthesised speech (espeak-ng) with gender, speaker, language,
accent and channel labels, made deterministically from a seed.

Installed Flite / Festival voices can be added as extra speakers (``external_voices``): each
voice is one speaker named ``<engine>_<voice>`` that says English sentences through every
channel; the espeak rows stay exactly as without them."""
from __future__ import annotations

import dataclasses

import numpy as np

from speechinterp.corpus import external_tts, splits
from speechinterp.corpus.channels import CHANNELS
from speechinterp.corpus.sentences import SENTENCES

# English accents of espeak-ng (the dialect analogue) and the voice each uses
ACCENTS = {"us": "en-us", "gb": "en", "scotland": "en-gb-scotland", "rp": "en-gb-x-rp",
           "caribbean": "en-029", "lancashire": "en-gb-x-gbclan", "west_midlands": "en-gb-x-gbcwmd"}
# espeak-ng voice variants (formants, pitch base, breathiness) that sound male / female
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Denis", "Diogo", "Gene",
        "Henrique", "Mario", "Michael", "Mike", "antonio", "edward", "gustave", "iven", "john",
        "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy",
        "rob", "robert", "sandro", "travis", "victor")
FEMALE = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty",
          "belinda", "grandma", "linda", "shelby", "steph", "steph2")


@dataclasses.dataclass(frozen=True)
class Size:
    """A preset: many speakers, few utterances each."""

    per_accent: int      # speakers per English accent (genders alternate)
    n_en: int            # English sentences per speaker
    n_other: int         # other-language sentences per speaker, each in a different language
    fractions: tuple = (0.5, 0.25, 0.25)   # train / dev / test speakers per accent and gender


SIZES = {"tiny": Size(3, 4, 10), "small": Size(24, 8, 4), "medium": Size(48, 8, 6),
         "large": Size(96, 10, 6)}


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: voice variant, pitch, range, rate, vocal-tract warp and accent."""

    name: str
    gender: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int
    accent: str
    warp: float = 1.0    # formant (and pitch, tempo) scale: audio resampled as if at sr * warp


def make_speakers(per_accent: int, seed: int) -> list[Speaker]:
    """``per_accent`` speakers per accent, genders alternating; within an accent and gender the
    variants come from a shuffled pool (all different while the pool lasts)."""
    rng = np.random.default_rng(seed)
    out = []
    for a, accent in enumerate(sorted(ACCENTS)):
        pools = {g: [p[i] for i in rng.permutation(len(p))]
                 for g, p in (("male", MALE), ("female", FEMALE))}
        for i in range(per_accent):
            gender = "female" if (a + i) % 2 else "male"
            pool = pools[gender]
            out.append(Speaker(
                name=f"spk{len(out):03d}", gender=gender, variant=pool[(i // 2) % len(pool)],
                pitch=int(rng.integers(25, 76)), pitch_range=int(rng.integers(20, 91)),
                rate=int(rng.integers(135, 206)), accent=accent,
                warp=round(float(rng.uniform(0.9, 1.1)), 3)))
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

    Each speaker says ``n_en`` English sentences in its accent and ``n_other`` sentences in other
    languages (a different language each, the least used so far in the speaker's split of
    :func:`split_speakers` first, so every language gets about the same number of speakers in
    every split), cycling through the channels. ``extra_voices`` append
    their rows after the espeak ones (which do not change): English sentences, at least one per
    channel, ``voice`` = ``<engine>:<voice>``."""
    sz = SIZES[size]
    rng = np.random.default_rng(seed)
    others = [lang for lang in sorted(SENTENCES) if lang != "en"]
    speakers = make_speakers(sz.per_accent, seed)
    split = assign_speakers({s.name: (s.accent, s.gender) for s in speakers}, seed, sz.fractions)
    used = {k: {lang: 0 for lang in others} for k in range(3)}
    rows = []
    for spk in speakers:
        items = [("en", SENTENCES["en"][i % len(SENTENCES["en"])]) for i in
                 rng.permutation(max(sz.n_en, len(SENTENCES["en"])))[:sz.n_en]]
        tie = rng.permutation(len(others))
        langs = []
        for k in range(sz.n_other):
            if k % len(others) == 0:
                rank = sorted(range(len(others)),
                              key=lambda j: (used[split[spk.name]][others[j]], tie[j]))
            lang = others[rank[k % len(others)]]
            used[split[spk.name]][lang] += 1
            langs.append(lang)
        for lang in sorted(set(langs)):
            pick = rng.permutation(len(SENTENCES[lang]))[:langs.count(lang)]
            items += [(lang, SENTENCES[lang][i]) for i in pick]
        offset = int(rng.integers(len(CHANNELS)))   # every speaker cycles through every channel
        for j, (lang, text) in enumerate(items):
            voice = ACCENTS[spk.accent] if lang == "en" else lang
            rows.append({
                "utt_id": f"{spk.name}_{j:03d}", "speaker": spk.name, "gender": spk.gender,
                "language": lang, "accent": spk.accent if lang == "en" else "",
                "channel": CHANNELS[(j + offset) % len(CHANNELS)], "text": text,
                "voice": f"{voice}+{spk.variant}", "pitch": spk.pitch,
                "pitch_range": spk.pitch_range, "rate": spk.rate, "warp": spk.warp,
            })
    return rows + _external_rows(extra_voices, max(sz.n_en, len(CHANNELS)), seed)


def split_speakers(rows: list[dict], seed: int, fractions=None, size: str | None = None
                   ) -> np.ndarray:
    """Speaker-disjoint train / dev / test (0 / 1 / 2) per row of :func:`plan`'s espeak rows.

    Stratified by accent and, within an accent, balanced by gender (:func:`assign_speakers`).
    ``fractions`` default to the ``size`` preset's. Deterministic by seed."""
    if fractions is None:
        fractions = SIZES[size].fractions if size else Size(0, 0, 0).fractions
    info = {}
    for r in rows:
        if r["accent"]:
            info.setdefault(r["speaker"], (r["accent"], r["gender"]))
    for r in rows:
        if r["speaker"] not in info:
            raise ValueError(f"speaker {r['speaker']!r} has no English (accent) utterance")
    assign = assign_speakers(info, seed, fractions)
    return np.array([assign[r["speaker"]] for r in rows], np.int32)


def assign_speakers(info: dict, seed: int, fractions) -> dict:
    """``{speaker: 0 / 1 / 2}`` from ``{speaker: (accent, gender)}``:
    :func:`speechinterp.corpus.splits.speaker_split` stratified by accent and balanced by gender
    (per accent the speakers are shuffled per gender and interleaved, the first gender alternating
    over accents; the first ``fractions[2]`` go to test and the next ``fractions[1]`` to dev, at
    least one each when the accent has 3 speakers or more), with the seed stream ``(seed, 2)``."""
    spk = list(info)
    codes = splits.speaker_split(spk, [info[s][0] for s in spk], fractions, (seed, 2),
                                 balance=[info[s][1] for s in spk])
    return dict(zip(spk, codes.tolist()))


SPLIT_NAMES = ("train", "dev", "test")
SPEAKER_PROPERTIES = ("gender", "accent", "language", "channel")


def speakers_per_class(rows: list[dict], splits, props=SPEAKER_PROPERTIES) -> dict:
    """``{property: {class: {split: distinct speakers}}}`` (empty property cells skipped)."""
    out: dict = {}
    for p in props:
        sets: dict = {}
        for r, s in zip(rows, splits):
            if r.get(p):
                name = s if isinstance(s, str) else SPLIT_NAMES[int(s)]
                sets.setdefault(r[p], {n: set() for n in SPLIT_NAMES})[name].add(r["speaker"])
        out[p] = {c: {n: len(v[n]) for n in SPLIT_NAMES} for c, v in sorted(sets.items())}
    return out


def speakers_table(counts: dict) -> str:
    """A compact text table of :func:`speakers_per_class`: one line per property and split."""
    lines = []
    for p, by_c in counts.items():
        w = {c: max(len(c), 3) for c in by_c}
        lines.append(f"{p:<9}" + " ".join(f"{c:>{w[c]}}" for c in by_c))
        for n in SPLIT_NAMES:
            lines.append(f"{'  ' + n:<9}" + " ".join(f"{by_c[c][n]:>{w[c]}}" for c in by_c))
    return "\n".join(lines)


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
                "pitch_range": "", "rate": "", "warp": "",
            })
    return rows


def synthesize_external(row: dict) -> tuple[np.ndarray, int]:
    """(float32 speech, sample rate) of an ``extra_voices`` row of :func:`plan`."""
    engine, voice = row["voice"].split(":", 1)
    return external_tts.synthesize(engine, voice, row["text"])
