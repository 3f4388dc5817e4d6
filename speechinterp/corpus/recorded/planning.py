"""Planning the recorded corpus: the utterances (:class:`Item`) of each fetched source.

One planner per source family (:data:`PLANNERS`) turns an unpacked package into items, each
labelled by the rules of :mod:`.labels`; :func:`plan` fetches every source, runs its planner,
records a source that is not there as ``unavailable: <reason>`` and caps the utterances per
speaker over all sources.
"""
from __future__ import annotations

import glob
import os
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from absl import logging

from speechinterp.corpus.recorded.audio import MAX_S, durations
from speechinterp.corpus.recorded.fetching import (FAMILIES, SOURCES, Source, SourceUnavailable,
                                                   extract_once, fetch, one_file)
from speechinterp.corpus.recorded.labels import (ASTERISK_PROMPTS, FILLETS_ROLE_GENDER,
                                                 KLETTRES_VOICES, TUXPAINT_VOICES, Voice,
                                                 ami_gender, ami_segments, asterisk_voice,
                                                 fillets_role, fold_accents, parse_rttm,
                                                 speakerbox_gender, speakerbox_speaker)


@dataclass
class Item:
    speaker: str
    gender: str
    language: str
    source: str
    recording: str
    pieces: list = field(default_factory=list)   # [(path, start_s | None, end_s | None, fmt)]
    trim: bool = False                            # trim silence of each piece (short clips)
    package: str = ""                             # the ``sources`` entry it came from


def _cap(items: list[Item], max_per_speaker: int, rng) -> list[Item]:
    """At most ``max_per_speaker`` items per speaker (a random subset, in order), by speaker."""
    by = defaultdict(list)
    for it in items:
        by[it.speaker].append(it)
    out = []
    for spk in sorted(by):
        its = by[spk]
        if len(its) > max_per_speaker:
            keep = sorted(rng.choice(len(its), max_per_speaker, replace=False))
            its = [its[k] for k in keep]
        out += its
    return out


def plan_ami(root: str) -> list[Item]:
    """AMI clips of the pyannote.audio sdist: the single-speaker segments of its RTTM turns."""
    data = one_file(os.path.join(root, "*", "tests", "data"), "tests/data folder")
    wavs = {fold_accents(os.path.splitext(os.path.basename(w))[0]): w
            for w in glob.glob(os.path.join(data, "*.wav"))}
    turns = []
    for part in ("train", "development", "test"):
        path = os.path.join(data, f"debug.{part}.rttm")
        if not os.path.exists(path):
            raise SourceUnavailable(f"no tests/data/debug.{part}.rttm in the unpacked package")
        with open(path, encoding="utf-8") as f:
            turns += parse_rttm(f.read())
    return [Item(f"ami_{t.speaker}", ami_gender(t.speaker), "en", "ami",
                 "meeting_16k_overlapped" if t.overlapped else "meeting_16k",
                 [(wavs[t.uri], t.start, t.end, None)])
            for t in ami_segments(turns) if t.uri in wavs]


def plan_speakerbox(root: str, max_s: float = MAX_S, min_s: float = 1.0) -> list[Item]:
    """speakerbox's ``diarized.zip``: each clip of at least ``min_s``, cut into equal pieces of
    at most ``max_s``."""
    zpath = one_file(os.path.join(root, "speakerbox", "tests", "data", "diarized.zip"),
                     "speakerbox/tests/data/diarized.zip")
    dest = extract_once(os.path.join(root, "diarized"),
                        lambda tmp: zipfile.ZipFile(zpath).extractall(tmp))
    items = []
    for w in sorted(glob.glob(os.path.join(dest, "*", "*", "*.wav"))):
        spk = speakerbox_speaker(os.path.relpath(w, dest).replace(os.sep, "/"))
        d = durations([w])[0]
        if d < min_s:
            continue
        n = int(np.ceil(d / max_s))
        for k in range(n):
            items.append(Item(f"speakerbox_{spk}", speakerbox_gender(spk), "en", "speakerbox",
                              "council_meeting_16k", [(w, k * d / n, (k + 1) * d / n, None)]))
    return items


def _clips(paths, fmt, min_s, max_s, voice: Voice, family, recording, rng, want):
    """One utterance per clip with ``min_s <= duration <= max_s``, ``want`` at most."""
    durs = durations(paths, fmt)
    ok = [p for p, d in zip(paths, durs) if min_s <= d <= max_s]
    if len(ok) > want:
        ok = [ok[k] for k in sorted(rng.choice(len(ok), want, replace=False))]
    return [Item(f"{family}_{voice.voice}", voice.gender, voice.language, family, recording,
                 [(p, None, None, fmt)], trim=True) for p in ok]


def _joined(paths, voice: Voice, family, recording, rng, want, target_s=3.0):
    """Short clips (letters, words) of one voice, shuffled, joined into ~``target_s`` utterances."""
    durs = durations(paths)
    order = rng.permutation(len(paths))
    items, cur, tot = [], [], 0.0
    for k in order:
        if durs[k] <= 0:
            continue
        cur.append((paths[k], None, None, None))
        tot += min(durs[k], 2.0) * 0.7      # rough length once trimmed
        if tot >= target_s:
            items.append(Item(f"{family}_{voice.voice}", voice.gender, voice.language, family,
                              recording, cur, trim=True))
            cur, tot = [], 0.0
            if len(items) >= want:
                break
    return items


def plan_asterisk(src: Source, root: str, rng, want: int) -> list[Item]:
    """Asterisk prompts: a prompt package's one voice, else every voice folder of the sounds."""
    base = os.path.join(root, "usr", "share", "asterisk", "sounds")
    items = []
    if src.name in ASTERISK_PROMPTS:
        v = ASTERISK_PROMPTS[src.name]
        files = sorted(glob.glob(os.path.join(base, v.language, "*.gsm")))
        return _clips(files, "gsm", 1.0, MAX_S, v, "asterisk", "telephone_8k", rng, want)
    for d in sorted(glob.glob(os.path.join(base, "*"))):
        v = asterisk_voice(d)
        if v is None:
            continue
        files = sorted(glob.glob(os.path.join(d, "*.wav")))   # top level: whole prompts
        items += _clips(files, None, 1.0, MAX_S, v, "asterisk", "telephone_8k", rng, want)
    return items


def plan_fillets(src: Source, root: str, rng, want: int) -> list[Item]:
    """Fish Fillets NG's dubbing in the package's language: the small and the big fish."""
    lang = src.name.rsplit("-", 1)[-1]
    files = sorted(glob.glob(os.path.join(root, "usr", "share", "games", "fillets-ng", "sound",
                                          "*", lang, "*.ogg")))
    items = []
    for role in ("small", "big"):
        mine = [f for f in files if fillets_role(f) == role]
        v = Voice(f"{lang}_{role}_fish", lang, FILLETS_ROLE_GENDER[role], "fillets dialogue")
        items += _clips(mine, None, 1.0, MAX_S, v, "fillets", "game_dub_22k", rng, want)
    return items


def plan_klettres(root: str, rng, want: int) -> list[Item]:
    """KLettres' letters and syllables, one credited voice per language, joined."""
    items = []
    for lang, v in sorted(KLETTRES_VOICES.items()):
        files = sorted(glob.glob(os.path.join(root, "usr", "share", "klettres", lang, "*",
                                              "*.ogg")))
        items += _joined(files, v, "klettres", "letters_44k", rng, want)
    return items


def plan_tuxpaint(root: str, rng, want: int) -> list[Item]:
    """Tux Paint's spoken stamp descriptions, one credited voice per language, joined."""
    items = []
    stamps = os.path.join(root, "usr", "share", "tuxpaint", "stamps")
    for lang, v in sorted(TUXPAINT_VOICES.items()):
        files = sorted(glob.glob(os.path.join(stamps, "**", f"*_desc_{lang}.ogg"),
                                 recursive=True))
        items += _joined(files, v, "tuxpaint", "words_44k", rng, want)
    return items


PLANNERS = {   # family -> f(src, root, rng, want) -> items
    "ami": lambda src, root, rng, want: plan_ami(root),
    "speakerbox": lambda src, root, rng, want: plan_speakerbox(root),
    "asterisk": plan_asterisk,
    "fillets": plan_fillets,
    "klettres": lambda src, root, rng, want: plan_klettres(root, rng, want),
    "tuxpaint": lambda src, root, rng, want: plan_tuxpaint(root, rng, want),
}


def _plan_source(src: Source, cache: str, rng, want: int) -> tuple[list[Item], str]:
    """``(items, status)`` of one source: ``"ok"``, or ``"unavailable: <reason>"`` with no
    items when it raises :class:`SourceUnavailable` (any other error propagates: a bug)."""
    try:
        return PLANNERS[src.family](src, fetch(src, cache), rng, want), "ok"
    except SourceUnavailable as e:
        msg = f"unavailable: {e}"
        logging.warning("recorded corpus: skipping %s (%s)", src.name, msg)
        return [], msg


def plan(cache: str, seed: int = 0, max_per_speaker: int = 20, families=FAMILIES):
    """Fetch the sources of ``families`` and plan the utterances.

    Returns ``(items, sources)``: ``sources`` is a list of dicts (name, source, status "ok" or
    "unavailable: reason", licence, utterances, speakers) in :data:`SOURCES` order.
    """
    report, planned = [], []
    for src in SOURCES:
        if src.family not in families:
            continue
        rng = np.random.default_rng([seed, SOURCES.index(src)])
        entry = {"name": src.name + (f"=={src.version}" if src.version else ""),
                 "source": src.family, "licence": src.licence}
        got, entry["status"] = _plan_source(src, cache, rng, max_per_speaker)
        for it in got:
            it.package = entry["name"]
        report.append(entry)
        planned.append(got)
    # the per-speaker cap over all sources (Allison speaks in two packages)
    capped = _cap([it for got in planned for it in got], max_per_speaker,
                  np.random.default_rng([seed, 99]))
    keep = {id(it) for it in capped}
    items = []
    for entry, got in zip(report, planned):
        mine = [it for it in got if id(it) in keep]
        entry["utterances"] = len(mine)
        entry["speakers"] = len({it.speaker for it in mine})
        items += mine
    return items, report
