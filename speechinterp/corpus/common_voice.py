"""Common Voice importer: ``<lang>/validated.tsv`` + ``<lang>/clips/*.mp3``.

Each language folder of a Common Voice release (Ardila et al., 2020) has ``validated.tsv``
(tab-separated, unquoted: ``client_id, path, sentence, up_votes, down_votes, age, gender,
accents | accent, variant, locale, segment``) and the clips. Rows get speaker (client_id),
gender, accent, age, locale, text and language (the folder name). Gender values of older
releases (``male``, ``female``, ``other``) and newer ones (``male_masculine``,
``female_feminine``, ``intersex``, ``transgender``, ``non-binary``, ``do_not_wish_to_say``) are
mapped to ``male`` / ``female`` / the value itself; empty and ``do_not_wish_to_say`` are
missing. The accent column is ``accents`` in newer releases and ``accent`` in older ones.

Splits: a speaker in the release's ``train.tsv`` / ``dev.tsv`` / ``test.tsv`` (speaker-disjoint
by construction) keeps that split; the other speakers are split speaker-disjointly, stratified
by language and gender.
"""
from __future__ import annotations

import csv
import os

from speechinterp.corpus.manifest import (ManifestError, Imported, read_table,
                                          speaker_disjoint_split)
from speechinterp.corpus.splits import DEFAULT_FRACTIONS

GENDERS = {"male": "male", "male_masculine": "male", "female": "female",
           "female_feminine": "female", "": "", "do_not_wish_to_say": ""}
REQUIRED = ("client_id", "path")
SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def language_folders(root: str) -> list[str]:
    """``root`` itself when it holds ``validated.tsv``, else its sub-folders that do."""
    if os.path.isfile(os.path.join(root, "validated.tsv")):
        return [root]
    if not os.path.isdir(root):
        raise ManifestError(f"{root}: not a folder")
    out = [os.path.join(root, d) for d in sorted(os.listdir(root))
           if os.path.isfile(os.path.join(root, d, "validated.tsv"))]
    if not out:
        raise ManifestError(f"{root}: no validated.tsv, neither here nor in a language "
                            f"sub-folder (<lang>/validated.tsv)")
    return out


def gender_of(value: str) -> str:
    v = value.strip().lower()
    return GENDERS.get(v, v)


def _release_splits(folder: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{client_id: split} from the release's split files, with a note when they disagree."""
    where: dict[str, set] = {}
    for split, name in SPLIT_FILES.items():
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            _, rows = read_table(p, "tsv", quoting=csv.QUOTE_NONE)
            for r in rows:
                if r.get("client_id"):
                    where.setdefault(r["client_id"], set()).add(split)
    crossing = [c for c, s in where.items() if len(s) > 1]
    if crossing:   # not speaker-disjoint: do not use them
        return {}, [(folder, f"release split files put {len(crossing)} speaker(s) in two "
                             f"splits; splitting all speakers anew")]
    return {c: next(iter(s)) for c, s in where.items()}, []


def import_common_voice(root: str, fractions=DEFAULT_FRACTIONS, seed: int = 0,
                        use_release_split: bool = True) -> Imported:
    """Rows for every validated clip of every language folder under ``root`` (see the module
    docstring). Clips listed but missing on disk are returned as skipped."""
    rows, skipped = [], []
    fixed: dict[str, str | None] = {}
    for folder in language_folders(root):
        lang = os.path.basename(os.path.normpath(folder))
        tsv = os.path.join(folder, "validated.tsv")
        cols, table = read_table(tsv, "tsv", quoting=csv.QUOTE_NONE)
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise ManifestError(f"{tsv}: lacks column(s) {missing}; it has {cols}")
        accent_col = "accents" if "accents" in cols else "accent" if "accent" in cols else None
        clips = os.path.join(folder, "clips")
        on_disk = set(os.listdir(clips)) if os.path.isdir(clips) else set()
        if use_release_split:
            spl, notes = _release_splits(folder)
            for c, s in spl.items():    # a client_id is one speaker across languages
                fixed[c] = s if fixed.get(c, s) == s else None
            skipped += notes
        for r in table:
            if not r["path"]:
                raise ManifestError(f"{tsv}:{r['__line__']}: empty path")
            if r["path"] not in on_disk:
                skipped.append((os.path.join(clips, r["path"]),
                                f"listed in {tsv} line {r['__line__']} but missing on disk"))
                continue
            if not r["client_id"]:
                raise ManifestError(f"{tsv}:{r['__line__']}: empty client_id")
            rows.append({
                "utt_id": f"{lang}/{os.path.splitext(r['path'])[0]}",
                "path": os.path.join(clips, r["path"]),
                "speaker": r["client_id"], "gender": gender_of(r.get("gender", "")),
                "language": lang, "accent": r.get(accent_col, "") if accent_col else "",
                "age": r.get("age", ""), "locale": r.get("locale", "") or lang,
                "text": r.get("sentence", ""),
            })
    if not rows:
        raise ManifestError(f"{root}: no clips found on disk for any validated.tsv row")
    rest = [r for r in rows if not fixed.get(r["speaker"])]
    rest = {r["utt_id"]: r["split"] for r in speaker_disjoint_split(
        rest, fractions, seed, ("language", "gender"))} if rest else {}
    rows = [{**r, "split": fixed.get(r["speaker"]) or rest[r["utt_id"]]} for r in rows]
    return Imported(rows, skipped)
