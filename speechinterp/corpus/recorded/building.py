"""The recorded corpus's split, its confounds, and the build that writes it.

:func:`build` writes ``wav/``, ``utterances.csv`` (:data:`COLUMNS`), ``sources.json`` and
``testable.json``. The split is speaker-disjoint, stratified by gender and source
(:func:`split_speakers`); a property is testable when every class has
:data:`~speechinterp.corpus.splits.MIN_SPEAKERS` speakers (:func:`testable_properties`).
"""
from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter, defaultdict

import numpy as np
from absl import logging

from speechinterp.corpus import splits
from speechinterp.corpus.recorded.audio import SR, load_item
from speechinterp.corpus.recorded.fetching import FAMILIES
from speechinterp.corpus.recorded.planning import Item, plan

COLUMNS = ["utt_id", "path", "split", "speaker", "speaker_id", "gender", "language", "channel",
           "source", "recording", "duration"]
PROPERTIES = ("gender", "speaker", "language", "channel")


def split_speakers(rows: list[dict], seed: int, fractions=splits.PROBE_FRACTIONS) -> list[str]:
    """Speaker-disjoint train/dev/test (:func:`speechinterp.corpus.splits.speaker_split`),
    stratified by gender and source (unknown gender its own stratum): each stratum of 3 or more
    speakers puts at least one in dev and one in test, one of 2 speakers one in test, so every
    source reaches the test split."""
    strata = [f"{r['gender'] or 'unknown'}/{r.get('source', '')}" for r in rows]
    return splits.split_names(splits.speaker_split([r["speaker"] for r in rows], strata,
                                                   fractions, seed))


def testable_properties(rows: list[dict], min_speakers: int = splits.MIN_SPEAKERS,
                        props=PROPERTIES) -> dict:
    """``{prop: (testable, {class: distinct speakers})}``; empty cells are unknown, not a class.

    A property is testable only if it has at least two classes and every class has at least
    ``min_speakers`` distinct speakers (so a speaker-disjoint split can test it; otherwise it is
    confounded with speaker). Speaker identity is the exception: its classes are the speakers
    and it is probed within speakers, so it is testable when at least ``min_speakers`` speakers
    have ``min_speakers`` or more utterances (one per split); its counts are
    ``{"speakers": n, "with_enough_utterances": k}``.
    """
    out = {}
    for p in props:
        if p == "speaker":
            n_utt = Counter(r["speaker"] for r in rows if r.get("speaker"))
            k = sum(1 for v in n_utt.values() if v >= min_speakers)
            out[p] = (k >= min_speakers, {"speakers": len(n_utt), "with_enough_utterances": k})
            continue
        sets = defaultdict(set)
        for r in rows:
            if r.get(p):
                sets[r[p]].add(r["speaker"])
        counts = {c: len(s) for c, s in sorted(sets.items())}
        ok = len(counts) >= 2 and all(n >= min_speakers for n in counts.values())
        out[p] = (ok, counts)
    return out


def speakers_per_split(rows: list[dict], props=("gender", "language", "channel", "source")):
    """``{prop: {class: {split: distinct speakers}}}`` plus ``speaker``: speakers per split."""
    out = {}
    for p in props:
        sets = defaultdict(lambda: defaultdict(set))
        for r in rows:
            if r.get(p):
                sets[r[p]][r["split"]].add(r["speaker"])
        out[p] = {c: {s: len(v.get(s, ())) for s in splits.SPLITS}
                  for c, v in sorted(sets.items())}
    sp = defaultdict(set)
    for r in rows:
        sp[r["split"]].add(r["speaker"])
    out["speaker"] = {"all": {s: len(sp.get(s, ())) for s in splits.SPLITS}}
    return out


def _write_audio(out: str, items: list[Item], seed: int, progress=None) -> list[dict]:
    """Each item through its channel into ``out/wav``; returns the rows (no split yet).

    Each speaker's utterances cycle through :data:`channels.CHANNELS` from a seeded offset; an
    utterance shorter than 0.25 s is dropped (its number is not reused)."""
    import soundfile as sf

    from speechinterp.corpus import channels
    os.makedirs(os.path.join(out, "wav"), exist_ok=True)
    rows = []
    per_spk = defaultdict(int)
    offsets = {}
    for i, it in enumerate(progress(items) if progress else items):
        if it.speaker not in offsets:
            offsets[it.speaker] = int(np.random.default_rng(
                [seed, len(offsets)]).integers(len(channels.CHANNELS)))
        j = per_spk[it.speaker]
        per_spk[it.speaker] += 1
        ch = channels.CHANNELS[(j + offsets[it.speaker]) % len(channels.CHANNELS)]
        x = load_item(it)
        if x.size < SR // 4:
            continue
        y = channels.apply_channel(x, SR, ch, np.random.default_rng([seed, i]))
        utt = f"{it.speaker}_{j:03d}"
        path = f"wav/{utt}.wav"
        sf.write(os.path.join(out, path), y, SR, subtype="PCM_16")
        rows.append({"utt_id": utt, "path": path, "speaker": it.speaker, "gender": it.gender,
                     "language": it.language, "channel": ch, "source": it.source,
                     "recording": it.recording, "duration": f"{len(y) / SR:.2f}",
                     "package": it.package})
    return rows


def _count_sources(sources: list[dict], rows: list[dict]) -> None:
    """Each source's utterances, speakers, speakers per gender and languages, from the rows
    written (a clip that trims to nothing is dropped)."""
    for e in sources:
        mine = [r for r in rows if r["package"] == e["name"]]
        e["utterances"] = len(mine)
        e["speakers"] = len({r["speaker"] for r in mine})
        e["speakers_per_gender"] = dict(Counter(r["gender"] or "unknown" for r in
                                                {r["speaker"]: r for r in mine}.values()))
        e["languages"] = sorted({r["language"] for r in mine if r["language"]})


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)


def build(out: str, cache: str, seed: int = 0, max_per_speaker: int = 20,
          families=FAMILIES, progress=None) -> tuple[list[dict], list[dict]]:
    """Build the corpus in ``out`` (``wav/``, ``utterances.csv``, ``sources.json``,
    ``testable.json``); returns ``(rows, sources)``."""
    t0 = time.time()
    items, sources = plan(cache, seed, max_per_speaker, families)
    rows = _write_audio(out, items, seed, progress)
    for r, s in zip(rows, split_speakers(rows, seed) if rows else []):
        r["split"] = s
    n_utt = Counter(r["speaker"] for r in rows)
    for r in rows:   # as testable_properties counts them: one utterance per split at least
        r["speaker_id"] = r["speaker"] if n_utt[r["speaker"]] >= splits.MIN_SPEAKERS else ""
    tmp = os.path.join(out, "utterances.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
    os.replace(tmp, os.path.join(out, "utterances.csv"))
    _count_sources(sources, rows)
    _write_json(os.path.join(out, "sources.json"),
                {"sources": sources, "build_seconds": round(time.time() - t0, 1)})
    note = ("not testable on this corpus: confounded with speaker (a class has fewer than "
            f"{splits.MIN_SPEAKERS} speakers)")
    _write_json(os.path.join(out, "testable.json"),
                {p: {"testable": ok, "counts": c, "note": "" if ok else note}
                 for p, (ok, c) in testable_properties(rows).items()}
                | {"speakers_per_split": speakers_per_split(rows)})
    logging.info("recorded corpus: %d utterances of %d speakers -> %s", len(rows),
                 len(n_utt), out)
    return rows, sources
